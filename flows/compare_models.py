"""Flow ``compare-models``: two or more model versions or aliases, and the baselines, on the same data.

    prefect deployment run compare-models/default -p 'models=["champion", "candidate", "3"]'
    python -m flows.compare_models champion candidate models:/ssh-harmonizer/3 ./my-model.safetensors

Each model (``models:/ssh-harmonizer@alias``, ``models:/ssh-harmonizer/N``, the shorthands
``champion`` / ``N``, or a ``.safetensors`` URL) and each baseline (identity, reinhard, histogram)
harmonizes the same fixed evaluation set (and, with ``triplets``, the same validation triplets).
The comparison table (means per method, and per strength level) is printed and logged; it goes,
with the per-item scores and a side-by-side image grid, to a new MLflow run (tag ``ssh.kind =
comparison``) and to a Prefect Markdown artifact.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import mlflow
from prefect import flow
from prefect.artifacts import create_markdown_artifact

from pipeline.evaluation import comparison_grid, format_table, metrics_for_logging
from pipeline.registry import MODEL_NAME, expand_model_ref, load_registered_model
from pipeline.tracking import EXPERIMENT, configure, log_rows, tracked_run
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
    models: list[str] | None = None,
    baselines: list[str] | None = None,
    data_root: str | None = None,
    triplets: str | None = None,
    experiment: str = EXPERIMENT,
    model_name: str = MODEL_NAME,
    eval_max_side: int | None = None,
    eval_photos: int | None = None,
    val_limit: int = 256,
    grid_rows: int = 6,
    run_name: str | None = None,
) -> dict[str, Any]:
    """Evaluate models and baselines on the same evaluation set; log a comparison table and image grid.

    Args:
        models: references (default: ``["champion", "candidate"]``); at least two methods in all.
        baselines: baselines to include (default: identity, reinhard, histogram; ``[]`` for none).
        data_root: locates the embedded MLflow store (default: ``SSH_DATA_ROOT``).
        triplets: a triplet version root whose ``val`` split is evaluated too (optional).
        experiment: the MLflow experiment of the comparison run.
        model_name: the registered model the shorthands refer to.
        eval_max_side, eval_photos: shrink the fixed evaluation set (None = the reference set).
        val_limit: validation triplets to evaluate on.
        grid_rows: composites shown in the side-by-side grid.
        run_name: the MLflow run name (default: ``compare-<UTC time>``).
    """
    log = run_logger()
    refs = list(models) if models is not None else ["champion", "candidate"]
    chosen = list(BASELINES) if baselines is None else list(baselines)
    configure(data_root)
    loaded, labels = load_models(refs, model_name)
    if len(loaded) + len(chosen) < 2:
        raise ValueError(f"nothing to compare: {len(loaded)} distinct model(s) and {len(chosen)} baseline(s)")
    for ref, label in labels.items():
        log.info("model %s -> %s", ref, label)
    evaluations = evaluate_models(
        loaded,
        triplets=triplets,
        baselines=chosen,
        eval_max_side=eval_max_side,
        eval_photos=eval_photos,
        val_limit=val_limit,
        keep_outputs=True,
    )
    summary = [row for evaluation in evaluations.values() for row in evaluation.summary()]
    by_level = evaluations["fixed"].summary(by_level=True)
    table = format_table(summary)
    level_table = format_table(by_level)
    print(table)
    log.info("comparison on the same evaluation set:\n%s\n\nby level:\n%s", table, level_table)
    run_name = run_name or time.strftime("compare-%Y%m%d-%H%M%S", time.gmtime())
    fixed = evaluations["fixed"]
    with tracked_run(
        run_name,
        experiment=experiment,
        data_root=data_root,
        resume=False,
        kind="comparison",
        tags={"compare.models": json.dumps(labels)},
    ) as run:
        mlflow.log_params(
            {
                "models": ",".join(refs)[:6000],
                "baselines": ",".join(chosen),
                "eval_max_side": eval_max_side,
                "eval_photos": eval_photos,
            }
        )
        for evaluation in evaluations.values():
            mlflow.log_metrics({k.replace(":", "_"): v for k, v in metrics_for_logging(evaluation).items()})
            log_rows(evaluation.rows, f"comparison/{evaluation.set_name}_items")
        log_rows(summary, "comparison/summary")
        log_rows(by_level, "comparison/summary_by_level")
        mlflow.log_text(f"{table}\n\nBy level:\n\n{level_table}\n", "comparison/table.md")
        mlflow.log_image(comparison_grid(fixed.items, fixed.outputs, rows=grid_rows), "comparison/grid.png")
        run_id = run.info.run_id
    create_markdown_artifact(
        f"## compare-models\n\nMLflow run `{run_id}`; models: "
        + ", ".join(f"`{r}` = `{v}`" for r, v in labels.items())
        + f"\n\n{table}\n\n### by level\n\n{level_table}\n",
        key="compare-models",
        description="compare-models table",
    )
    return {"run_id": run_id, "models": labels, "table": table, "summary": summary, "by_level": by_level}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.compare_models", description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", default=None, help="model references (default: champion candidate)")
    parser.add_argument("--baselines", default=",".join(BASELINES), help="comma-separated ('' for none)")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--triplets", default=None)
    parser.add_argument("--eval-max-side", type=int, default=None)
    args = parser.parse_args(argv)
    result = compare_models(
        models=args.models or None,
        baselines=[b for b in args.baselines.split(",") if b],
        data_root=args.data_root,
        triplets=args.triplets,
        eval_max_side=args.eval_max_side,
    )
    print(json.dumps(result["models"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
