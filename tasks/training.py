"""The Prefect tasks of train-model: train (Ray Train), save the model, record its evaluations.

The work itself is ``pipeline.training`` and ``pipeline.evaluation``; saving retries on transient
storage errors (``tasks.common.IO_TASK``), training resumes from its checkpoints instead.
"""

from __future__ import annotations

from typing import Any

import mlflow
from prefect import task
from prefect.cache_policies import NO_CACHE
from torch import nn

from pipeline.evaluation import Evaluation, comparison_grid, format_table, metrics_for_logging
from pipeline.tracking import RunRecorder, log_rows
from pipeline.training import TrainingJob, TrainingOutcome, run_training
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
    mlflow.set_tag("model.url", url)
    run_logger().info("saved the model to %s", url)
    return url


@task(name="record-evaluations", cache_policy=NO_CACHE)
def record_evaluations(recorder: RunRecorder, evaluations: dict[str, Evaluation], step: int) -> dict[str, str]:
    """Metrics, summary and per-item tables, and the fixed set's image grid into the active MLflow run;
    returns the markdown table of each evaluation."""
    tables = {}
    for name, evaluation in evaluations.items():
        recorder.metrics(metrics_for_logging(evaluation), step)
        log_rows(evaluation.summary(), f"evaluation/{name}_summary")
        log_rows(evaluation.rows, f"evaluation/{name}_items")
        tables[name] = format_table(evaluation.summary(by_level=name == "fixed"))
    fixed = evaluations["fixed"]
    mlflow.log_image(comparison_grid(fixed.items, fixed.outputs), "evaluation/fixed_grid.png")
    mlflow.log_text("\n\n".join(f"## {k}\n\n{v}" for k, v in tables.items()), "evaluation/tables.md")
    return tables
