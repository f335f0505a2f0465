"""What every Ray Train worker runs: the job (``TrainingJob``, pickled to the workers and saved as JSON
with every checkpoint) and the loop (``train_loop_per_worker``: build the model, resume from the last
checkpoint, stream the worker's part of the shards, train, checkpoint and score the selection
composites on rank 0). The driver side, which starts the workers, is ``pipeline.training``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch

from pipeline.evaluation import SELECT_MAX_SIDE, selection_composites
from pipeline.selection import BestSoFar
from pipeline.training_events import RankZeroEvents
from ssh_model.checkpoints import load_training_state, save_training_state
from ssh_model.dataset import TripletDataset
from ssh_model.network import build_model
from ssh_model.train import StepEvent, TrainConfig, make_optimizer, make_scheduler, train

logger = logging.getLogger(__name__)


STATE_FILE = "training_state.safetensors"
JOB_FILE = "job.json"
COMMIT_TIMEOUT_S = 600.0


@dataclass(frozen=True, kw_only=True)
class TrainingJob:
    """What every training worker does (pickled to the workers; ``as_dict`` is JSON for params).

    Args:
        data: a triplet version root (``{data_root}/triplets/{version}``), a folder of shards or one shard.
        model: a preset name (``ssh_model.network.all_presets``) or a ``model.config`` dict.
        train: the optimisation settings; ``train.batch_size`` is triplets per worker per step.
        checkpoint_every: steps between checkpoints (the last step is always checkpointed).
        config: the stage config the job was made from (``TrainModelConfig.model_dump()``), kept with every
            checkpoint so a checkpoint says how it was trained.
        loader_workers: DataLoader processes per training worker (0 = decode in the training process).
        threads: torch CPU threads per worker (the CPUs each worker reserves).
        split: the shard split to train on.
        shuffle_buffer: rows each loader holds for shuffling.
        channels_last: use channels-last memory on GPUs.
        select_photos: URLs of photos not trained on whose composites pick the returned model
            (``pipeline.selection``); empty: the last model is returned.
        select_max_side: those photos are downscaled to this long side first.
        step_hook: called on every worker after each step as ``step_hook(step, rank)`` (instrumentation;
            the fault-injection tests kill a worker from it); not saved with the job.
    """

    data: str
    model: str | dict[str, Any]
    train: TrainConfig
    checkpoint_every: int
    loader_workers: int
    threads: int
    config: dict[str, Any] = field(default_factory=dict)
    split: str = "train"
    shuffle_buffer: int = 256
    channels_last: bool = True
    select_photos: tuple[str, ...] = ()
    select_max_side: int = SELECT_MAX_SIDE
    step_hook: Callable[[int, int], None] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be at least 1, got {self.checkpoint_every}")
        if self.train.steps < 1 or self.train.batch_size < 1:
            raise ValueError("steps and batch_size must be at least 1")
        if self.loader_workers < 0 or self.threads < 1:
            raise ValueError("loader_workers must be >= 0 and threads >= 1")

    def as_dict(self) -> dict[str, Any]:
        """The job as JSON-able values (what checkpoints and MLflow params keep), without the step hook."""
        values = asdict(replace(self, step_hook=None))
        values.pop("step_hook")
        return values


# -- worker side ------------------------------------------------------------------------------------


def _loader(dataset: Any, workers: int, pin_memory: bool) -> torch.utils.data.DataLoader:
    options: dict[str, Any] = {"batch_size": None, "num_workers": workers, "pin_memory": pin_memory}
    if workers:
        options.update(prefetch_factor=4, persistent_workers=False)
    return torch.utils.data.DataLoader(dataset, **options)


def resume_position(step: int, batches_per_epoch: int) -> tuple[int, int]:
    """(epoch, batches left in that epoch) after ``step`` optimizer steps."""
    epoch, done = divmod(step, batches_per_epoch)
    return epoch, batches_per_epoch - done


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any]:
    """The function every Ray Train worker runs (see the module docstring)."""
    job: TrainingJob = config["job"]
    cfg = job.train
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    events = RankZeroEvents(config.get("events"), rank)
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        torch.set_num_threads(job.threads)  # this worker process only: the CPUs it reserved
    else:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(cfg.seed)
    model = build_model(job.model)
    if device.type == "cuda" and job.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # To the device; DDP when world > 1. Gradients live in the all-reduce buckets (no copy), and batch
    # norm statistics stay per rank (no broadcast each forward; checkpoints keep rank 0's): on CPUs
    # every collective is compute the workers do not do.
    model = ray.train.torch.prepare_model(
        model, parallel_strategy_kwargs={"gradient_as_bucket_view": True, "broadcast_buffers": False}
    )
    optimizer = make_optimizer(model, cfg)
    best = (
        BestSoFar(selection_composites(job.select_photos, job.select_max_side))
        if (rank == 0 and job.select_photos)
        else None
    )
    start_step = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            start_step, extra = load_training_state(os.path.join(folder, STATE_FILE), model, optimizer)
            if best is not None:
                best.restore(folder, extra)
    if best is not None and start_step == 0:
        events.send("select", step=0, select_psnr=best.score(model, 0))
    scheduler = make_scheduler(optimizer, cfg, start_step)
    dataset = TripletDataset(
        job.data,
        split=job.split,
        batch_size=cfg.batch_size,
        shuffle=True,
        seed=cfg.seed,
        rank=rank,
        world_size=world,
        drop_last=True,
        shuffle_buffer=job.shuffle_buffer,
    )
    per_epoch = len(dataset)
    events.send(
        "start",
        step=start_step,
        steps=cfg.steps,
        world_size=world,
        device=str(device),
        batches_per_epoch=per_epoch,
        triplets=dataset.total_rows,
    )
    last_checkpoint = start_step

    def save_checkpoint(step: int) -> None:
        nonlocal last_checkpoint
        metrics: dict[str, Any] = {"step": step}
        if rank == 0:
            extra = {"job": job.as_dict(), "world_size": world}
            if best is not None:
                metrics["select_psnr"] = best.score(model, step)
                extra.update(best.state())
                events.send("select", step=step, select_psnr=metrics["select_psnr"], best_step=best.step)
            with tempfile.TemporaryDirectory() as folder:
                save_training_state(os.path.join(folder, STATE_FILE), model, optimizer, step, extra=extra)
                if best is not None:
                    best.save(folder)
                with open(os.path.join(folder, JOB_FILE), "w") as handle:
                    json.dump(job.as_dict(), handle, indent=1)
                ray.train.report(
                    metrics, checkpoint=ray.train.Checkpoint.from_directory(folder), checkpoint_dir_name=f"step-{step:08d}"
                )
            # The controller registers reports when it next polls the workers; wait for that, or a
            # crash in the next seconds would lose this checkpoint and restart from the one before.
            ray.train.get_all_reported_checkpoints(
                consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED, timeout_s=COMMIT_TIMEOUT_S
            )
            events.send("checkpoint", step=step)
        else:
            ray.train.report(metrics)  # every rank reports the same number of times (a barrier)
        last_checkpoint = step

    def batches() -> Iterator[dict[str, Any]]:
        """Batches forever (epoch after epoch); between steps, the checkpoint and the step hook run."""
        step = start_step
        epoch, left = resume_position(start_step, per_epoch)
        while True:
            dataset.set_epoch(epoch)
            # On a resume mid-epoch the epoch's order restarts and only the batches it had left are
            # taken: cheap (nothing is decoded to be skipped), not the exact rows the lost run had left.
            for taken, batch in enumerate(_loader(dataset, job.loader_workers, device.type == "cuda")):
                if taken >= left:
                    break
                yield batch
                step += 1  # the batch was trained on when the next one is asked for
                if step % job.checkpoint_every == 0 and step < cfg.steps:
                    save_checkpoint(step)
                if job.step_hook is not None:
                    job.step_hook(step, rank)
            epoch, left = epoch + 1, per_epoch

    def on_step(event: StepEvent) -> None:
        events.send(
            "progress",
            step=event.step,
            steps=event.steps,
            losses=event.losses,
            lr=event.lr,
            samples_per_s=event.samples_per_s * world,
            eta_s=event.eta_s,
            grid=event.grid,
            cpu_s=time.process_time(),
        )  # rank 0's CPU seconds so far (utilisation = d cpu / d time)

    started = time.perf_counter()
    result = train(
        model,
        batches(),
        cfg,
        device=device,
        callback=on_step,
        optimizer=optimizer,
        scheduler=scheduler,
        start_step=start_step,
    )
    if result.steps > last_checkpoint:
        save_checkpoint(result.steps)
    seconds = time.perf_counter() - started
    trained = (result.steps - start_step) * cfg.batch_size * world
    return {
        "steps": result.steps,
        "start_step": start_step,
        "seconds": seconds,
        "triplets": trained,
        "samples_per_s": trained / seconds if seconds > 0 else 0.0,
        "world_size": world,
        "device": str(device),
    }


__all__ = ["JOB_FILE", "STATE_FILE", "TrainingJob", "resume_position", "train_loop_per_worker"]
