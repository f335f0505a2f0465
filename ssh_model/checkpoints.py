"""Model and training-state checkpoints as single safetensors files (no pickle anywhere).

A model file holds the weights (and norm buffers) plus metadata
``{"format": "ssh-harmonizer/1", "config": "<json of model.config>", ...extra}``, so
``load_model(url)`` rebuilds the right network by itself. A training-state file holds the model,
the optimizer's tensors (AdamW ``exp_avg`` etc.) flattened to keys ``optim.<param index>.<name>``,
and the optimizer's non-tensor parts, the step and the caller's ``extra`` dict as JSON metadata.
Every URL goes through ``ssh_model.storage`` (local paths, ``s3://``, ``memory://``).
"""

from __future__ import annotations

import json
import logging
import struct
from typing import Any

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import Tensor, nn

from ssh_model.network import build_model
from ssh_model.storage import read_bytes, write_bytes_atomic

logger = logging.getLogger(__name__)

MODEL_FORMAT = "ssh-harmonizer/1"
TRAINING_FORMAT = "ssh-harmonizer-training/1"
_MODEL_PREFIX = "model."
_OPTIM_PREFIX = "optim."
_RESERVED = ("format", "config")


class CheckpointError(ValueError):
    """A file that is not a checkpoint of the expected kind; the message names the URL."""


def unwrap(model: nn.Module) -> nn.Module:
    """The bare network inside a DistributedDataParallel (or similar ``.module``) wrapper."""
    return getattr(model, "module", model)


def _cpu_tensors(state: dict[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
    return {prefix + k: v.detach().to("cpu").contiguous() for k, v in state.items()}


def read_header(data: bytes, url: str) -> dict[str, Any]:
    """The JSON header of safetensors bytes; raises CheckpointError naming ``url`` when it is not one."""
    if len(data) < 8:
        raise CheckpointError(f"{url}: not a safetensors file ({len(data)} bytes)")
    (size,) = struct.unpack("<Q", data[:8])
    if size > len(data) - 8 or size > 100_000_000:
        raise CheckpointError(f"{url}: not a safetensors file (bad header length {size})")
    try:
        header = json.loads(data[8 : 8 + size])
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{url}: not a safetensors file (header is not JSON: {err})") from err
    if not isinstance(header, dict):
        raise CheckpointError(f"{url}: not a safetensors file (header is not an object)")
    return header


def read_metadata(data: bytes, url: str) -> dict[str, str]:
    """The string metadata of safetensors bytes (``{}`` when it has none)."""
    return dict(read_header(data, url).get("__metadata__") or {})


def _load(data: bytes, url: str, expected_format: str) -> tuple[dict[str, Tensor], dict[str, str]]:
    metadata = read_metadata(data, url)
    found = metadata.get("format")
    if found != expected_format:
        raise CheckpointError(f"{url}: checkpoint format is {found!r}, expected {expected_format!r}")
    try:
        tensors = load_tensors(data)
    except Exception as err:  # safetensors raises its own error type for corrupt bodies
        raise CheckpointError(f"{url}: corrupt safetensors file: {err}") from err
    return tensors, metadata


def _config_of(metadata: dict[str, str], url: str) -> dict[str, Any]:
    try:
        config = json.loads(metadata["config"])
    except (KeyError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{url}: checkpoint has no valid 'config' metadata") from err
    if not isinstance(config, dict):
        raise CheckpointError(f"{url}: checkpoint 'config' metadata is not an object")
    return config


def save_model(model: nn.Module, url: str, metadata: dict[str, str] | None = None) -> None:
    """Write ``model`` (an SSHNet, possibly DDP-wrapped) to one safetensors file at ``url``.

    Args:
        model: the network; its ``config`` goes into the file's metadata.
        url: where to write (any storage URL); written atomically.
        metadata: extra string metadata (e.g. a git commit, the training run id); keys
            "format" and "config" are reserved.
    """
    net = unwrap(model)
    extra = dict(metadata or {})
    clash = set(extra) & set(_RESERVED)
    if clash:
        raise ValueError(f"metadata keys {sorted(clash)} are reserved")
    bad = [k for k, v in extra.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise TypeError(f"metadata must map str to str; offending keys: {bad}")
    info = {**extra, "format": MODEL_FORMAT, "config": json.dumps(net.config, sort_keys=True)}
    write_bytes_atomic(url, save_tensors(_cpu_tensors(net.state_dict()), metadata=info))
    logger.info("saved model %s to %s", net.config, url)


def model_from_bytes(data: bytes, name: str = "<bytes>", device: str | torch.device = "cpu") -> nn.Module:
    """The network in the bytes of a ``save_model`` file, on ``device``, in eval mode (no file, no pickle).

    Raises ``CheckpointError`` whose message starts with ``name`` (the URL or URI the bytes came from).
    """
    tensors, metadata = _load(data, name, MODEL_FORMAT)
    model = build_model(_config_of(metadata, name))
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{name}: weights do not fit config {metadata['config']}: {err}") from err
    return model.to(device).eval()


def load_model(url: str, device: str | torch.device = "cpu") -> nn.Module:
    """The network stored at ``url`` by ``save_model``, on ``device``, in eval mode."""
    return model_from_bytes(read_bytes(url), url, device)


def load_model_metadata(url: str) -> dict[str, str]:
    """The metadata of a model file (format, config and the extras given to ``save_model``)."""
    data = read_bytes(url)
    return read_metadata(data, url)


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Tensors keyed ``optim.<param index>.<name>`` and the JSON-able rest of the state dict."""
    state = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, Tensor):
                tensors[f"{_OPTIM_PREFIX}{index}.{name}"] = value.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    groups = [{k: (v.item() if isinstance(v, Tensor) else v) for k, v in group.items()} for group in state["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        index, name = key[len(_OPTIM_PREFIX) :].split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for index, values in rest["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in rest["param_groups"]]
    return {"state": state, "param_groups": groups}


def save_training_state(
    url: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write model + optimizer + step to one safetensors file, to resume training exactly.

    Args:
        url: where to write (any storage URL); written atomically.
        model: the network (DDP wrappers are unwrapped).
        optimizer: its per-parameter tensors are stored as tensors, the rest as JSON metadata.
        step: the number of optimizer steps taken so far.
        extra: any JSON-able dict (e.g. the train config, the data position); returned by the loader.
    """
    net = unwrap(model)
    optim_tensors, optim_rest = _flatten_optimizer(optimizer)
    tensors = {**_cpu_tensors(net.state_dict(), _MODEL_PREFIX), **optim_tensors}
    info = {
        "format": TRAINING_FORMAT,
        "config": json.dumps(getattr(net, "config", {}), sort_keys=True),
        "step": str(int(step)),
        "optimizer": json.dumps(optim_rest),
        "extra": json.dumps(extra or {}),
    }
    write_bytes_atomic(url, save_tensors(tensors, metadata=info))
    logger.info("saved training state at step %d to %s", step, url)


def load_training_state(
    url: str, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> tuple[int, dict[str, Any]]:
    """Load what ``save_training_state`` wrote into ``model`` (and ``optimizer``); returns (step, extra).

    The optimizer must have been built over the model's parameters in the same order as when saved.
    """
    tensors, metadata = _load(read_bytes(url), url, TRAINING_FORMAT)
    net = unwrap(model)
    model_state = {k[len(_MODEL_PREFIX) :]: v for k, v in tensors.items() if k.startswith(_MODEL_PREFIX)}
    try:
        net.load_state_dict(model_state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{url}: weights do not fit this model: {err}") from err
    if optimizer is not None:
        optim_tensors = {k: v for k, v in tensors.items() if k.startswith(_OPTIM_PREFIX)}
        state = _unflatten_optimizer(optim_tensors, json.loads(metadata["optimizer"]))
        try:
            optimizer.load_state_dict(state)  # moves state tensors to each parameter's device
        except (ValueError, KeyError) as err:
            raise CheckpointError(f"{url}: optimizer state does not fit this optimizer: {err}") from err
    return int(metadata["step"]), json.loads(metadata["extra"])


__all__ = [
    "MODEL_FORMAT",
    "TRAINING_FORMAT",
    "CheckpointError",
    "load_model",
    "model_from_bytes",
    "load_model_metadata",
    "load_training_state",
    "save_model",
    "save_training_state",
]
