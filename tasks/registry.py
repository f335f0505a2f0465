"""The Prefect tasks that register a trained model and run the promotion gate (``pipeline.registry``)."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from pipeline.registry import GateDecision, log_model, promotion_gate, register_candidate, versions_of_run
from tasks.common import IO_TASK, run_logger


@task(name="register-model", **IO_TASK)
def register_model_task(model_url: str, run_id: str, model_name: str, tags: dict[str, str]) -> str:
    """Log the model file as a pyfunc in the active run and register it as ``candidate``; returns the version.

    Idempotent: a version of this run with the same ``ssh.steps`` tag is returned as it is (a retry or a
    re-run of the flow does not register the same model twice).
    """
    existing = [v for v in versions_of_run(run_id, model_name) if v.tags.get("ssh.steps") == tags.get("ssh.steps")]
    if existing:
        run_logger().info("already registered as %s version %s", model_name, existing[0].version)
        return str(existing[0].version)
    info = log_model(model_url)
    return str(register_candidate(info.model_uri, model_name, tags=tags).version)


@task(name="promotion-gate", cache_policy=NO_CACHE)
def promotion_gate_task(version: str, **options: Any) -> GateDecision:
    """``pipeline.registry.promotion_gate``: champion moves to ``version`` only when it is better."""
    decision = promotion_gate(version, **options)
    run_logger().info(
        "gate: %s version %s %s (%s)",
        options.get("name", "ssh-harmonizer"),
        version,
        "promoted to champion" if decision.promoted else "not promoted",
        decision.reason,
    )
    return decision
