"""The promotion gate: a candidate version replaces the champion only when it is better on one fixed set.

``promotion_gate`` scores the candidate and the current champion on the fixed evaluation set
(``pipeline.evaluation``) now, on the same composites, and moves the ``champion`` alias to the candidate
only when it beats the champion by ``margin`` (in the metric's units); the decision and both scores are
tags on the version (``gate.*``).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import mlflow

from pipeline.configs import TrainModelConfig
from pipeline.registry import CHAMPION, load_registered_model, version_label

# importing pipeline.tracking sets MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false

logger = logging.getLogger(__name__)

GATE_PREFIX = "gate."


# -- the promotion gate -----------------------------------------------------------------------------


@dataclass(frozen=True)
class GateDecision:
    """What the gate decided for one candidate version (also stored as ``gate.*`` version tags)."""

    promoted: bool
    reason: str
    metric: str
    margin: float
    candidate_version: str
    candidate_score: float
    champion_version: str  # "" when there was no champion
    champion_score: float | None

    def as_tags(self) -> dict[str, str]:
        values = asdict(self)
        values["decision"] = "promoted" if self.promoted else "refused"
        return {f"{GATE_PREFIX}{k}": "" if v is None else str(v) for k, v in values.items()}


def decide(candidate: float, champion: float | None, margin: float, higher_better: bool) -> tuple[bool, str]:
    """Promote when there is no champion, or when the candidate beats it by at least ``margin``."""
    if champion is None:
        return True, "no champion yet"
    gain = candidate - champion if higher_better else champion - candidate
    if gain >= margin:
        return True, f"beats the champion by {gain:.4f} (margin {margin})"
    return False, f"gain {gain:.4f} is below the margin {margin}"


def promotion_gate(candidate_version: str, config: TrainModelConfig, *, size: int | None = None) -> GateDecision:
    """Compare a candidate version with the champion on the fixed evaluation set; promote it or not.

    Both are evaluated now, on the same composites (``pipeline.evaluation.fixed_evaluation_set``), so a
    change to the evaluation code never compares old numbers with new ones.

    Args:
        candidate_version: the registry version number of the candidate.
        config: ``model_name`` (the registered model), ``gate_metric`` (the mean over the set; "psnr"/"ssim"
            higher is better, "mse"/"fmse" lower), ``gate_margin`` (how much better, in the metric's units,
            the candidate must be), ``eval_max_side`` / ``eval_photos`` (the evaluation set).
        size: the network resolution for harmonize (default: harmonize's own).
    """
    # deferred: evaluation pulls the fixed evaluation set's photos and the baselines, only the gate needs them
    from pipeline.evaluation import evaluate_composites, fixed_evaluation_set, higher_is_better, methods_for

    name, metric, margin = config.model_name, config.gate_metric, config.gate_margin
    higher_better = higher_is_better(metric)
    client = mlflow.MlflowClient()
    candidate_label = f"{name}/{candidate_version}"
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except mlflow.exceptions.MlflowException:
        champion = None
    models = {candidate_label: load_registered_model(f"models:/{name}/{candidate_version}")[0]}
    is_champion = champion is not None and str(champion.version) == str(candidate_version)
    if champion is not None and not is_champion:
        models[version_label(champion)] = load_registered_model(f"models:/{name}/{champion.version}")[0]
    options = {} if size is None else {"size": size}
    evaluation = evaluate_composites(
        methods_for(models, baselines=(), **options), fixed_evaluation_set(config.eval_max_side, config.eval_photos)
    )
    candidate_score = evaluation.score(candidate_label, metric)
    champion_score = None
    if champion is not None:
        label = version_label(champion)
        champion_score = evaluation.score(label, metric) if label in models else candidate_score
    if is_champion:  # e.g. a re-run of the flow: keep the decision recorded when it was promoted
        return GateDecision(
            promoted=True,
            reason="already the champion",
            metric=metric,
            margin=float(margin),
            candidate_version=str(candidate_version),
            candidate_score=candidate_score,
            champion_version=str(candidate_version),
            champion_score=champion_score,
        )
    promoted, reason = decide(candidate_score, champion_score, margin, higher_better)
    decision = GateDecision(
        promoted=promoted,
        reason=reason,
        metric=metric,
        margin=float(margin),
        candidate_version=str(candidate_version),
        candidate_score=candidate_score,
        champion_version="" if champion is None else str(champion.version),
        champion_score=champion_score,
    )
    for key, value in decision.as_tags().items():
        client.set_model_version_tag(name, str(candidate_version), key, value)
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, str(candidate_version))
    logger.info(
        "promotion gate for %s: %s, %s (%s): candidate %.4f, champion %s",
        candidate_label,
        "PROMOTED" if promoted else "refused",
        reason,
        metric,
        candidate_score,
        "none" if champion_score is None else f"{champion_score:.4f}",
    )
    return decision


__all__ = ["GATE_PREFIX", "GateDecision", "decide", "promotion_gate"]
