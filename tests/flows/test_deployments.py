"""prefect.yaml: every deployment points at a real flow, its parameters exist there, the schedule is as documented."""

import importlib
import inspect
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOYMENTS = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]


def flow_of(entrypoint: str):
    path, name = entrypoint.split(":")
    return getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=lambda d: f"{d['entrypoint']}")
def test_given_a_deployment_when_its_flow_is_loaded_then_every_parameter_it_sets_exists(deployment):
    flow = flow_of(deployment["entrypoint"])
    accepted = set(inspect.signature(flow.fn).parameters)
    assert set(deployment.get("parameters") or {}) <= accepted, sorted(set(deployment["parameters"]) - accepted)
    assert deployment["work_pool"]["name"] == "local-process"


def test_given_the_project_when_listing_deployments_then_retrain_runs_weekly_and_each_stage_has_its_own():
    by_flow = {flow_of(d["entrypoint"]).name: d for d in DEPLOYMENTS}
    assert {"ingest-images", "build-triplets", "train-model", "compare-models", "harmonize-batch", "retrain", "demo"} <= set(
        by_flow
    )
    weekly = by_flow["retrain"]
    assert weekly["name"] == "weekly"
    assert weekly["schedules"][0]["cron"] == "0 3 * * 1" and weekly["schedules"][0]["active"] is False
    assert by_flow["harmonize-batch"]["name"] == "default"  # `prefect deployment run harmonize-batch/default`
