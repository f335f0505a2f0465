"""Flow ``compare-models``: two or more model versions or aliases, and the baselines, on the same data.

    prefect deployment run compare-models/default -p 'config={"models": ["champion", "candidate", "3"]}'
    ssh-harmonize compare-models --models champion --models models:/ssh-harmonizer/3 --models ./my-model.safetensors

Each model (``models:/ssh-harmonizer@alias``, ``models:/ssh-harmonizer/N``, the shorthands
``champion`` / ``N``, or a ``.safetensors`` URL) and each baseline (identity, reinhard, histogram)
harmonizes the same fixed evaluation set (and, with ``triplets``, the same validation triplets).
The comparison table (means per method, and per strength level) is printed and logged; it goes,
with the per-item scores and a side-by-side image grid, to a new MLflow run (tag ``ssh.kind =
comparison``) and to a Prefect Markdown artifact.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import mlflow
from prefect import flow
from prefect.artifacts import create_markdown_artifact

from pipeline.configs import CompareConfig
from pipeline.evaluation import comparison_grid, format_table, metrics_for_logging
from pipeline.registry import MODEL_NAME, expand_model_ref, load_registered_model
from pipeline.tracking import configure, log_rows, tracked_run
from ssh_model.baselines import BASELINES
from tasks.common import run_logger
from tasks.evaluation import evaluate_models


def load_models(refs: Sequence[str], name: str = MODEL_NAME) -> tuple[dict[str, Any], dict[str, str]]:
    """Load each reference once; returns (label -> model, reference -> label). A label is the version
    string (``name/N`` or ``sha256:...``); references to the same version share one entry."""
    models: dict[str, Any] = {}
    labels: dict[str, str] = {}
    for ref in refs:
        uri = expand_model_ref(ref, name)
        model, version = load_registered_model(uri)
        labels[ref] = version
        models.setdefault(version, model)
    return models, labels


@flow(name="compare-models")
def compare_models(
    data_root: str | None = None,
    triplets: str | None = None,
    run_name: str | None = None,
    config: CompareConfig | None = None,
) -> dict[str, Any]:
    """Evaluate models and baselines on the same evaluation set; log a comparison table and image grid.

    Args:
        data_root: locates the embedded MLflow store (default: ``SSH_DATA_ROOT``).
        triplets: a triplet version root whose ``val`` split is evaluated too (optional).
        run_name: the MLflow run name (default: ``compare-<UTC time>``).
        config: which models and baselines, and the evaluation sets (``pipeline.configs.CompareConfig``; at
            least two methods in all).
    """
    config = config or CompareConfig()
    log = run_logger()
    configure(data_root)
    baselines = list(BASELINES) if config.baselines is None else config.baselines
    loaded, labels = load_models(config.models, config.model_name)
    if len(loaded) + len(baselines) < 2:
        raise ValueError(f"nothing to compare: {len(loaded)} distinct model(s) and {len(baselines)} baseline(s)")
    for ref, label in labels.items():
        log.info("model %s -> %s", ref, label)
    evaluations = evaluate_models(loaded, triplets, config, baselines=baselines, keep_outputs=True)
    summary = [row for evaluation in evaluations.values() for row in evaluation.summary()]
    by_level = evaluations["fixed"].summary(by_level=True)
    table = format_table(summary)
    level_table = format_table(by_level)
    log.info("comparison on the same evaluation set:\n%s\n\nby level:\n%s", table, level_table)
    run_name = run_name or time.strftime("compare-%Y%m%d-%H%M%S", time.gmtime())
    fixed = evaluations["fixed"]
    with tracked_run(
        run_name,
        experiment=config.experiment,
        data_root=data_root,
        resume=False,
        kind="comparison",
        tags={"compare.models": json.dumps(labels)},
    ) as run:
        mlflow.log_params(
            {
                "models": ",".join(config.models)[:6000],
                "baselines": ",".join(baselines),
                "eval_max_side": config.eval_max_side,
                "eval_photos": config.eval_photos,
            }
        )
        mlflow.log_dict(config.model_dump(), "config.json")
        for evaluation in evaluations.values():
            mlflow.log_metrics({k.replace(":", "_"): v for k, v in metrics_for_logging(evaluation).items()})
            log_rows(evaluation.rows, f"comparison/{evaluation.set_name}_items")
        log_rows(summary, "comparison/summary")
        log_rows(by_level, "comparison/summary_by_level")
        mlflow.log_text(f"{table}\n\nBy level:\n\n{level_table}\n", "comparison/table.md")
        mlflow.log_image(comparison_grid(fixed.items, fixed.outputs, config.grid_rows), "comparison/grid.png")
        run_id = run.info.run_id
    create_markdown_artifact(
        f"## compare-models\n\nMLflow run `{run_id}`; models: "
        + ", ".join(f"`{r}` = `{v}`" for r, v in labels.items())
        + f"\n\n{table}\n\n### by level\n\n{level_table}\n",
        key="compare-models",
        description="compare-models table",
    )
    return {"run_id": run_id, "models": labels, "table": table, "summary": summary, "by_level": by_level}
