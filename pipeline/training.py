"""Distributed training of the SSH network on Ray Train: TorchTrainer, DDP, checkpoints, resume.

The driver (``run_training``, wrapped by the ``train-ssh-model`` Prefect task) launches a
``TorchTrainer`` with ``ScalingConfig(num_workers, use_gpu, resources_per_worker)``; every worker
runs ``train_loop_per_worker``:

1. builds the network (a preset or a config), wraps it with ``ray.train.torch.prepare_model``
   (DDP over NCCL on GPUs, gloo on CPUs; channels-last on GPUs), and the optimizer and schedule
   of ``ssh_model.train``;
2. restores the latest checkpoint when there is one (``ray.train.get_checkpoint()``: after a
   worker failure, ``FailureConfig(max_failures)`` restarts the group from it; a re-run with the
   same run name and storage finds it too, because Ray Train keys the run's storage by its name);
3. streams its own part of the triplet shards with ``TripletDataset(rank=world_rank,
   world_size=...)`` (every rank gets the same number of batches) through a DataLoader;
4. runs ``ssh_model.train.train`` (one ``train_step`` per batch, bf16 autocast on GPUs, no host
   sync between log steps) and every ``checkpoint_every`` steps reports a checkpoint (a
   safetensors training state: weights, config, optimizer, step) with ``ray.train.report``;
5. with ``select_photos``, rank 0 also scores the model on composites of those photos before the
   first step and at every checkpoint and keeps the best (``pipeline.selection``): the run returns the
   best model, not the last.

Rank 0 sends progress events (loss, samples/s, ETA, sample grids) to the driver through a Ray
queue; the driver logs a progress line per event and hands each event to ``on_event`` (the flow
logs them to MLflow). Training never uses Ray Data: on a 2-core machine a Ray Data pipeline and
the training workers could wait on each other's CPUs forever. Each worker reserves its CPUs
(``resources_per_worker``) and the driver refuses to start (after ``resource_wait_s``) when they
are not free, instead of queueing forever; the controller's retries of a worker group that cannot
start are capped too (``controller_failure_limit``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch
from ray.train.torch import TorchConfig, TorchTrainer
from ray.util.queue import Queue

from pipeline.configs import TrainModelConfig
from pipeline.ray_runtime import forwarded_env, ray_init
from pipeline.selection import best_of_checkpoint
from pipeline.training_events import EVENT_QUEUE_SIZE, drain_events, event_line
from pipeline.training_worker import STATE_FILE, TrainingJob, train_loop_per_worker
from ssh_model import storage
from ssh_model.checkpoints import load_training_state
from ssh_model.network import build_model, preset_name
from ssh_model.train import TrainConfig

logger = logging.getLogger(__name__)


class InsufficientResources(RuntimeError):
    """The Ray cluster does not have the CPUs/GPUs the workers need free (training would wait forever)."""


@dataclass
class TrainingOutcome:
    """What a training run produced (on the driver)."""

    model: torch.nn.Module  # the selected weights, else the final ones (SSHNet or ColourNet), CPU, eval mode
    steps: int  # the step count of the final checkpoint
    start_steps: list[int]  # the step each attempt started from (0, then the checkpoints it resumed from)
    checkpoint_path: str  # where Ray Train stored the final checkpoint
    storage_path: str  # the run's folder on storage (keyed by the run name)
    seconds: float
    samples_per_s: float  # over the whole run, all workers (0 when nothing was trained)
    progress: list[dict[str, Any]] = field(default_factory=list)  # progress events (without grids)
    summary: dict[str, Any] = field(default_factory=dict)  # what rank 0 returned
    selected_step: int | None = None  # the step of the returned model when it was selected ...
    selected_psnr: float | None = None  # ... and its mean PSNR on the selection composites


# -- driver side ------------------------------------------------------------------------------------


def worker_resources(use_gpu: bool, threads: int, loader_workers: int) -> dict[str, float]:
    """CPUs (and a GPU) each training worker reserves: its torch threads plus its loader processes."""
    resources: dict[str, float] = {"CPU": float(threads + loader_workers)}
    if use_gpu:
        resources["GPU"] = 1.0
    return resources


def wait_for_resources(needed: dict[str, float], timeout_s: float) -> None:
    """Return when ``needed`` is free on the cluster; raise InsufficientResources after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        free = ray.available_resources()
        if all(free.get(name, 0.0) >= amount - 1e-9 for name, amount in needed.items()):
            return
        if time.monotonic() >= deadline:
            total = ray.cluster_resources()
            raise InsufficientResources(
                f"training needs {needed} free but after {timeout_s:.0f}s only "
                f"{ {k: free.get(k, 0.0) for k in needed} } of { {k: total.get(k, 0.0) for k in needed} } "
                f"are: something else holds them (a Ray Data job still running, another training?). "
                f"Use fewer workers, free the resources, or raise resource_wait_s."
            )
        time.sleep(0.25)


def _url_of(path: str, storage_root: str) -> str:
    protocol = storage.protocol_of(storage_root)
    return path if protocol == "file" else f"{protocol}://{path}"


def run_training(
    job: TrainingJob,
    *,
    run_name: str,
    storage_root: str,
    num_workers: int,
    use_gpu: bool,
    max_failures: int,
    resource_wait_s: float | None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    log: logging.Logger | logging.LoggerAdapter = logger,
) -> TrainingOutcome:
    """Train with Ray Train and return the final model; resumes the run ``run_name`` when it exists.

    Args:
        job: what the workers do.
        run_name: the run's name; its storage is ``{storage_root}/{run_name}``, so the same name resumes.
        storage_root: where Ray Train keeps runs and checkpoints (local path or ``s3://``).
        num_workers: training workers (one per GPU with ``use_gpu``).
        use_gpu: one GPU per worker, NCCL, bf16 autocast (when ``job.train.amp``).
        max_failures: worker-group failures to recover from (each restarts from the last checkpoint).
        resource_wait_s: how long to wait for the workers' CPUs/GPUs to be free before refusing to
            start (None = do not check, e.g. on an autoscaling cluster).
        on_event: called in a driver thread with every worker event (start, progress, checkpoint);
            progress events carry ``grid`` (uint8 sample grid) at sample steps.
        log: where progress lines go (the Prefect task passes its run logger).
    """
    ray_init()
    resources = worker_resources(use_gpu, job.threads, job.loader_workers)
    if resource_wait_s is not None:
        wait_for_resources({k: v * num_workers for k, v in resources.items()}, resource_wait_s)
    if storage.protocol_of(storage_root) == "file":
        storage_root = os.path.abspath(storage_root)
        storage_fs, storage_path = None, storage_root
    else:
        storage_fs, storage_path = storage.pyarrow_filesystem(storage_root)
    if storage.protocol_of(job.data) == "file":
        job = replace(job, data=os.path.abspath(job.data))
    events = Queue(maxsize=EVENT_QUEUE_SIZE, actor_options={"num_cpus": 0})
    start_steps: list[int] = []
    progress: list[dict[str, Any]] = []

    def handle(event: dict[str, Any]) -> None:
        if event["kind"] == "start":
            start_steps.append(int(event["step"]))
        if event["kind"] == "progress":
            progress.append({k: v for k, v in event.items() if k != "grid"})
        log.info("%s", event_line(event))
        if on_event is not None:
            on_event(event)

    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"job": job, "events": events},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=num_workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=storage_path,
            storage_filesystem=storage_fs,
            failure_config=ray.train.FailureConfig(max_failures=max_failures, controller_failure_limit=2),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            worker_runtime_env={"env_vars": forwarded_env()},
        ),
    )
    log.info(
        "training %s on %d %s worker(s) (%s each), run %s under %s",
        job.model,
        num_workers,
        "GPU" if use_gpu else "CPU",
        resources,
        run_name,
        storage_root,
    )
    stop = threading.Event()
    drainer = threading.Thread(target=drain_events, args=(events, handle, stop), name="train-events", daemon=True)
    drainer.start()
    started = time.perf_counter()
    try:
        result = trainer.fit()
    finally:
        stop.set()
        drainer.join(timeout=30)
        ray.kill(events.actor)
    seconds = time.perf_counter() - started
    if result.checkpoint is None:
        raise RuntimeError(f"training run {run_name} finished without a checkpoint under {storage_root}")
    model = build_model(job.model)
    with result.checkpoint.as_directory() as folder:
        steps, extra = load_training_state(os.path.join(folder, STATE_FILE), model)
        selected = best_of_checkpoint(folder, extra)
    selected_step = selected_psnr = None
    if selected is not None:
        model, selected_step, selected_psnr = selected
        log.info(
            "selected the model of step %d of %d: mean PSNR %.2f dB on %d held-out photo(s)' composites",
            selected_step,
            steps,
            selected_psnr,
            len(job.select_photos),
        )
    summary = dict(result.return_value or {})
    trained = float(summary.get("triplets", 0))
    samples_per_s = trained / summary["seconds"] if summary.get("seconds") else 0.0
    checkpoint_url = _url_of(result.checkpoint.path, storage_root)
    log.info(
        "training done: step %d in %.1fs (%.1f samples/s over the run); final checkpoint %s",
        steps,
        seconds,
        samples_per_s,
        checkpoint_url,
    )
    return TrainingOutcome(
        model=model.eval(),
        steps=steps,
        start_steps=start_steps,
        checkpoint_path=checkpoint_url,
        storage_path=storage.join(storage_root, run_name),
        seconds=seconds,
        samples_per_s=samples_per_s,
        progress=progress,
        summary=summary,
        selected_step=selected_step,
        selected_psnr=selected_psnr,
    )


def job_for(data: str, config: TrainModelConfig, select_photos: tuple[str, ...]) -> TrainingJob:
    """The job of a stage config whose run-time fields are decided (``TrainModelConfig.resolve``)."""
    loop = TrainConfig(
        steps=config.steps,
        batch_size=config.batch_size,
        lr=config.lr,
        warmup_steps=config.warmup_steps,
        log_every=config.log_every,
        sample_every=config.sample_every,
        seed=config.seed,
    )
    return TrainingJob(
        data=data,
        model=preset_name(config.model_family, config.preset),
        train=loop,
        checkpoint_every=config.checkpoint_every,
        loader_workers=config.loader_workers,
        threads=config.threads,
        select_photos=select_photos,
        config=config.model_dump(),
    )


__all__ = [
    "InsufficientResources",
    "TrainingOutcome",
    "job_for",
    "run_training",
    "wait_for_resources",
    "worker_resources",
]
