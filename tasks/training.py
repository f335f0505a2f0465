"""The Prefect task that trains a model with Ray Train (the work is ``pipeline.training.run_training``)."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from pipeline.training import TrainingJob, TrainingOutcome, run_training
from tasks.common import run_logger


@task(name="train-ssh-model", cache_policy=NO_CACHE)
def train_model_task(job: TrainingJob, **options: Any) -> TrainingOutcome:
    """``run_training(job, **options)`` with its progress lines in the Prefect run's log."""
    return run_training(job, log=run_logger(), **options)
