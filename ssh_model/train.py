"""Single-process training of the SSH network on batches of dual-LUT triplets (plain PyTorch).

The pieces are reusable on their own (Ray Train wraps the model in DDP and calls the same
functions on each worker): ``batch_to_tensors`` -> ``train_step`` (one optimizer step, no host
sync) with ``make_optimizer`` / ``make_scheduler``; ``train`` is the loop around them that logs a
progress line, reports ``StepEvent``s to a callback and keeps a per-step history. Loss values are
only copied to the host at log steps, so the device never waits on Python between them.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from ssh_model.losses import LossConfig, ssh_forward
from ssh_model.network import tensor_to_images
from ssh_model.progress import format_duration

logger = logging.getLogger(__name__)

TRIPLET_KEYS = ("content_a", "reference_a", "reference_b", "content_b")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How the loop trains. The knobs a training run sets have no default here: ``pipeline.configs.TrainModelConfig``
    is their one home.

    Args:
        steps: total optimizer steps (the loop also stops when the batches run out).
        batch_size: triplets per step (informational here: the batches come from the caller).
        lr: peak AdamW learning rate, reached after ``warmup_steps``, then cosine decay to 0 at ``steps``.
        warmup_steps: linear warm-up length.
        log_every: steps between progress lines / callback events.
        seed: seeds torch at the start of ``train``.
        sample_every: steps between sample grids (0 = never).
        weight_decay: AdamW decay on conv weights (never on norms or biases).
        grad_clip: max global gradient norm (0 = no clipping).
        amp: bf16 autocast when training on CUDA (ignored on CPU).
        losses: loss weights and form.
    """

    steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    log_every: int
    seed: int
    sample_every: int = 0
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    amp: bool = True
    losses: LossConfig = field(default_factory=LossConfig)


@dataclass(frozen=True)
class StepEvent:
    """What the callback sees every ``log_every`` steps (and at sample steps and the last step)."""

    step: int
    steps: int
    losses: dict[str, float]
    lr: float
    samples_per_s: float
    eta_s: float
    grid: np.ndarray | None = None  # uint8 (rows*S, 4*S, 3) from sample_grid, at sample steps


@dataclass
class TrainResult:
    history: list[dict[str, float]]  # one dict per step: step, lr and every loss term
    steps: int  # the step count reached (start_step + steps run)
    seconds: float


def batch_to_tensors(batch: Mapping[str, np.ndarray | Tensor], device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """uint8 (B, S, S, 3) arrays under TRIPLET_KEYS -> float (B, 3, S, S) tensors in [-1, 1] on ``device``.

    The uint8 data is moved first (4x less to copy) and converted on the device. Float tensors
    already shaped (B, 3, S, S) pass through (moved to ``device``).
    """
    out = {}
    for key in TRIPLET_KEYS:
        if key not in batch:
            raise KeyError(f"batch has no {key!r} (keys: {sorted(batch)})")
        value = batch[key]
        if isinstance(value, Tensor) and value.is_floating_point():
            out[key] = value.to(device, non_blocking=True)
            continue
        images = torch.as_tensor(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else value
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"{key}: expected uint8 (B, S, S, 3), got {images.dtype} {tuple(images.shape)}")
        images = images.to(device, non_blocking=True).permute(0, 3, 1, 2)  # (B, 3, S, S) uint8
        out[key] = images.float().div_(127.5).sub_(1.0).contiguous()
    return out


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on conv/linear weights only (not on norm parameters or biases)."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99))


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """The multiplier of ``cfg.lr`` at optimizer step ``step`` (0-based): linear warm-up, cosine to 0."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, start_step: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step schedule (call ``.step()`` after each optimizer step); ``start_step`` resumes mid-way."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: lr_factor(start_step + i, cfg))


def autocast_for(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when ``amp``; a no-op elsewhere."""
    if amp and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_step(
    model: nn.Module,
    tensors: Mapping[str, Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    cfg: TrainConfig,
) -> tuple[dict[str, Tensor], Tensor]:
    """One optimizer step on a batch from ``batch_to_tensors``; no host sync.

    Returns the detached loss terms (scalar tensors on the device) and the detached harmonization
    outputs (B, 3, S, S) for sample grids.
    """
    device = tensors["content_a"].device
    model.train()
    with autocast_for(device, cfg.amp):
        losses, outputs = ssh_forward(model, *(tensors[k] for k in TRIPLET_KEYS), cfg.losses)
    optimizer.zero_grad(set_to_none=True)
    losses["total"].backward()
    if cfg.grad_clip > 0:
        losses["grad_norm"] = nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return {k: v.detach() for k, v in losses.items()}, outputs.detach()


def sample_grid(content: Tensor, reference: Tensor, output: Tensor, target: Tensor, rows: int = 4) -> np.ndarray:
    """uint8 (rows*S, 4*S, 3): one example per row; columns content, reference, output, pseudo-GT.

    All inputs (B, 3, S, S) in [-1, 1]; the reference is resized to S x S when it differs.
    """
    rows = min(rows, content.shape[0])
    size = content.shape[-2:]
    columns = []
    for x in (content, reference, output, target):
        x = x[:rows].detach().float()
        if x.shape[-2:] != size:
            x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
        columns.append(tensor_to_images(x))  # (rows, S, S, 3)
    grid = np.concatenate(columns, axis=2)  # (rows, S, 4S, 3)
    return grid.reshape(-1, grid.shape[2], 3)


def step_line(step: int, steps: int, losses: Mapping[str, float], lr: float, samples_per_s: float, eta_s: float) -> str:
    """The one progress line of training: step, losses, learning rate, throughput and ETA."""
    return (
        f"step {step}/{steps} loss {losses['total']:.4f} (recon {losses['recon']:.4f} harm {losses['harm']:.4f}) "
        f"lr {lr:.2e} {samples_per_s:.1f} samples/s eta {format_duration(eta_s)}"
    )


def train(
    model: nn.Module,
    batches: Iterable[Mapping[str, np.ndarray | Tensor]],
    cfg: TrainConfig,
    device: torch.device | str | None = None,
    callback: Callable[[StepEvent], None] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    start_step: int = 0,
) -> TrainResult:
    """Train ``model`` in place from ``start_step`` up to ``cfg.steps`` steps (or until ``batches`` ends).

    Args:
        model: an SSHNet (or a DDP wrapper around one); moved to ``device``.
        batches: dicts with uint8 (B, S, S, 3) arrays content_a, reference_a, reference_b, content_b.
        cfg: the training configuration.
        device: defaults to CUDA when available, else CPU.
        callback: called with a StepEvent every ``cfg.log_every`` steps, at sample steps and at the end.
        optimizer, scheduler: pass restored ones to resume; built from ``cfg`` otherwise.
        start_step: the number of steps already taken (resume).
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(cfg.seed)
    model.to(device)
    optimizer = optimizer or make_optimizer(model, cfg)
    scheduler = scheduler or make_scheduler(optimizer, cfg, start_step)
    history: list[dict[str, float]] = []
    pending: list[tuple[int, float, dict[str, Tensor]]] = []  # device-side losses not yet copied

    def flush() -> None:
        """Copy the pending losses to the host (one sync) and append them to the history."""
        if pending:
            names = list(pending[0][2])
            values = torch.stack([torch.stack([p[2][k].float() for k in names]) for p in pending]).tolist()
            for (s, r, _), row in zip(pending, values, strict=True):
                history.append({"step": s, "lr": r, **dict(zip(names, row, strict=True))})
            pending.clear()

    started = window_start = time.perf_counter()
    window_samples, step = 0, start_step
    for batch in batches:
        if step >= cfg.steps:
            break
        tensors = batch_to_tensors(batch, device)
        lr = optimizer.param_groups[0]["lr"]
        losses, outputs = train_step(model, tensors, optimizer, scheduler, cfg)
        step += 1
        window_samples += tensors["content_a"].shape[0]
        pending.append((step, lr, losses))
        is_sample = cfg.sample_every > 0 and step % cfg.sample_every == 0
        if step % cfg.log_every and not is_sample and step < cfg.steps:
            continue
        flush()
        now = time.perf_counter()
        samples_per_s = window_samples / max(now - window_start, 1e-9)
        eta_s = (cfg.steps - step) * (now - started) / max(step - start_step, 1)
        window_start, window_samples = now, 0
        grid = None
        if is_sample:
            grid = sample_grid(tensors["content_a"], tensors["reference_b"], outputs, tensors["content_b"])
        terms = {k: v for k, v in history[-1].items() if k not in ("step", "lr")}
        logger.info("%s", step_line(step, cfg.steps, terms, lr, samples_per_s, eta_s))
        if callback is not None:
            callback(StepEvent(step, cfg.steps, terms, lr, samples_per_s, eta_s, grid))
    flush()
    seconds = time.perf_counter() - started
    if step < cfg.steps:
        logger.warning("batches ran out at step %d of %d", step, cfg.steps)
    return TrainResult(history=history, steps=step, seconds=seconds)


__all__ = [
    "TRIPLET_KEYS",
    "StepEvent",
    "TrainConfig",
    "TrainResult",
    "autocast_for",
    "batch_to_tensors",
    "lr_factor",
    "make_optimizer",
    "make_scheduler",
    "sample_grid",
    "train",
    "train_step",
]
