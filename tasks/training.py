"""The Prefect tasks of train-model: train (Ray Train), save the model, record its evaluations.

The work itself is ``pipeline.training`` and ``pipeline.evaluation``; saving retries on transient
storage errors (``tasks.common.IO_TASK``), training resumes from its checkpoints instead.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from torch import nn

from pipeline.evaluation import Evaluation, record_evaluations
from pipeline.tracking import RunRecorder
from pipeline.training import TrainingOutcome, run_training
from pipeline.training_worker import TrainingJob
from ssh_model.checkpoints import save_model
from tasks.common import IO_TASK, run_logger


@task(name="train-ssh-model", cache_policy=NO_CACHE)
def train_model_task(job: TrainingJob, **options: Any) -> TrainingOutcome:
    """``run_training(job, **options)`` with its progress lines in the Prefect run's log."""
    return run_training(job, log=run_logger(), **options)


@task(name="save-model", **IO_TASK)
def save_model_task(model: nn.Module, url: str, metadata: dict[str, str]) -> str:
    """Write the trained model as one safetensors file (atomically); returns ``url``."""
    save_model(model, url, metadata=metadata)
    run_logger().info("saved the model to %s", url)
    return url


@task(name="record-evaluations", cache_policy=NO_CACHE)
def record_evaluations_task(
    recorder: RunRecorder, evaluations: dict[str, Evaluation], step: int, grid_rows: int
) -> dict[str, str]:
    """``pipeline.evaluation.record_evaluations`` into the flow's MLflow run; returns the markdown tables."""
    return record_evaluations(recorder, evaluations, step, grid_rows)
