"""The Prefect tasks that register a trained model (``pipeline.registry``) and run the promotion gate (``pipeline.gate``)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from pipeline.configs import TrainModelConfig
from pipeline.gate import GateDecision, promotion_gate
from pipeline.registry import register_once
from tasks.common import IO_TASK, run_logger


@task(name="register-model", **IO_TASK)
def register_model_task(model_url: str, run_id: str, steps: int, name: str, tags: dict[str, str]) -> str:
    """``pipeline.registry.register_once``: safe to retry (a version already made is reused)."""
    return register_once(model_url, run_id, steps, name, tags)


@task(name="promotion-gate", cache_policy=NO_CACHE)
def promotion_gate_task(version: str, config: TrainModelConfig) -> GateDecision:
    """``pipeline.gate.promotion_gate``: champion moves to ``version`` only when it is better."""
    decision = promotion_gate(version, config)
    verdict = "promoted to champion" if decision.promoted else "not promoted"
    run_logger().info("gate: %s version %s %s (%s)", config.model_name, version, verdict, decision.reason)
    return decision
