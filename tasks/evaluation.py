"""The Prefect task that evaluates models and the baselines (the work is ``pipeline.evaluation``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from prefect import task
from prefect.cache_policies import NO_CACHE

from pipeline.configs import EvalConfig
from pipeline.evaluation import (
    Evaluation,
    evaluate_composites,
    evaluate_triplets,
    fixed_evaluation_set,
    format_table,
    methods_for,
)
from ssh_model.baselines import BASELINES
from tasks.common import run_logger


@task(name="evaluate-models", cache_policy=NO_CACHE)
def evaluate_models(
    models: Mapping[str, torch.nn.Module],
    triplets: str | None,
    config: EvalConfig,
    baselines: Sequence[str] = tuple(BASELINES),
    keep_outputs: bool = False,
) -> dict[str, Evaluation]:
    """Evaluate ``models`` (label -> network) and the baselines on the fixed set and on the val triplets.

    Returns ``{"fixed": Evaluation, "val": Evaluation}`` ("val" only when ``triplets`` has a val split).
    """
    log = run_logger()
    composites = fixed_evaluation_set(config.eval_max_side, config.eval_photos)
    results = {"fixed": evaluate_composites(methods_for(models, baselines), composites, keep_outputs)}
    if triplets is not None:
        val = evaluate_triplets(models, triplets, "val", config.val_limit, baselines=baselines)
        if val is not None:
            results["val"] = val
    for name, evaluation in results.items():
        log.info("evaluation on the %s set (%d rows):\n%s", name, len(evaluation.rows), format_table(evaluation.summary()))
    return results
