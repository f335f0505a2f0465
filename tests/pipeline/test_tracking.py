"""MLflow tracking: where the store is, the pickle default, runs resumed by name, training events logged."""

import logging
import os
import re
import subprocess
import sys

import mlflow
import numpy as np
import pytest

from pipeline import tracking
from pipeline.tracking import (
    RUN_NAME_TAG,
    RunRecorder,
    flatten_params,
    git_commit,
    log_params_once,
    log_rows,
    tracked_run,
    tracking_uri,
)
from tests.pipeline.training_cases import mlflow_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("tracking"))
    with mlflow_store(folder):
        yield folder


def test_given_no_tracking_uri_when_the_data_root_is_local_then_sqlite_is_under_it(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(str(tmp_path / "data")) == f"sqlite:///{tmp_path}/data/mlflow/mlflow.db"
    assert (tmp_path / "data" / "mlflow").is_dir()
    assert tracking.artifact_root(str(tmp_path / "data")) == (tmp_path / "data/mlflow/artifacts").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri(str(tmp_path / "data")) == "http://127.0.0.1:5000"


def test_given_an_s3_data_root_when_no_uri_is_set_then_a_local_cache_store_is_used_and_said(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(tracking, "CACHE_DIR", tmp_path / "cache")
    with caplog.at_level(logging.INFO, logger="pipeline.tracking"):
        uri = tracking_uri("s3://bucket/ssh")
    assert uri == f"sqlite:///{tmp_path}/cache/mlflow/mlflow.db"
    assert "s3://bucket/ssh is not a local folder" in caplog.text and str(tmp_path / "cache") in caplog.text
    assert tracking.artifact_root("s3://bucket/ssh") == "s3://bucket/ssh/mlflow/artifacts"


def test_given_a_fresh_process_when_tracking_is_imported_then_pickle_loading_is_off_unless_the_user_said_so():
    code = "import os, pipeline.tracking; print(os.environ['MLFLOW_ALLOW_PICKLE_DESERIALIZATION'])"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"}

    def value(environ: dict) -> str:
        command = [sys.executable, "-c", code]
        return subprocess.run(command, env=environ, capture_output=True, text=True, check=True).stdout.strip()

    assert value(env) == "false"
    assert value({**env, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true"}) == "true"


def test_given_a_run_name_when_tracked_twice_then_the_same_run_resumes_and_changed_params_become_tags(store):
    with tracked_run("resumable", tags={"data.version": "v1@abc"}) as first:
        log_params_once(first.info.run_id, {"train": {"steps": 2, "lr": 0.1}})
        mlflow.log_metric("loss", 1.0, step=1)
    with tracked_run("resumable") as second:
        log_params_once(second.info.run_id, {"train": {"steps": 4, "lr": 0.1}, "workers": 2})
        mlflow.log_metric("loss", 0.5, step=2)
    run = mlflow.MlflowClient().get_run(first.info.run_id)
    history = mlflow.MlflowClient().get_metric_history(first.info.run_id, "loss")
    assert second.info.run_id == first.info.run_id and run.info.status == "FINISHED"
    assert run.data.params == {"train.steps": "2", "train.lr": "0.1", "workers": "2"}
    assert run.data.tags["resumed.train.steps"] == "4" and run.data.tags[RUN_NAME_TAG] == "resumable"
    assert run.data.tags["data.version"] == "v1@abc"
    assert [(m.step, m.value) for m in history] == [(1, 1.0), (2, 0.5)]


def test_given_a_failing_block_when_tracked_then_the_run_ends_failed_and_a_new_name_starts_fresh(store):
    with pytest.raises(RuntimeError, match="boom"), tracked_run("failing") as failing:
        raise RuntimeError("boom")
    with tracked_run("failing", resume=False) as fresh:
        pass
    client = mlflow.MlflowClient()
    assert client.get_run(failing.info.run_id).info.status == "FAILED"
    assert fresh.info.run_id != failing.info.run_id


def test_given_training_events_when_recorded_then_curves_throughput_and_sample_grids_land_in_the_run(store):
    grid = np.random.default_rng(0).integers(0, 256, size=(32, 128, 3), dtype=np.uint8)
    with tracked_run("events") as run:
        recorder = RunRecorder(run.info.run_id)
        recorder.record({"kind": "start", "step": 0})
        for step in (1, 2):
            recorder.record(
                {
                    "kind": "progress",
                    "step": step,
                    "steps": 2,
                    "lr": 1e-3,
                    "samples_per_s": 10.0 * step,
                    "eta_s": 2.0 - step,
                    "losses": {"total": 1.0 / step, "recon": 0.4, "harm": 0.6},
                    "grid": grid if step == 2 else None,
                }
            )
        recorder.record({"kind": "checkpoint", "step": 2})
        rows = [{"method": "model", "psnr": 30.0}, {"method": "identity", "psnr": 28.0}]
        log_rows(rows, "evaluation/summary")
    client = mlflow.MlflowClient()
    total = client.get_metric_history(run.info.run_id, "loss/total")
    throughput = client.get_metric_history(run.info.run_id, "samples_per_s")
    assert [(m.step, m.value) for m in total] == [(1, 1.0), (2, 0.5)]
    assert [m.value for m in throughput] == [10.0, 20.0]
    assert client.get_metric_history(run.info.run_id, "checkpoint_step")[0].value == 2
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
    assert len(artifacts) >= 1 and all("samples" in a for a in artifacts)
    evaluation = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert evaluation == {"evaluation/summary.json", "evaluation/summary.csv"}


def test_given_nested_config_when_flattened_then_keys_are_dotted_strings():
    flat = flatten_params({"a": {"b": 1, "c": {"d": None}}, "e": "x"})
    assert flat == {"a.b": "1", "a.c.d": "None", "e": "x"}


def test_given_this_repository_when_asked_for_the_commit_then_a_sha_comes_back():
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", git_commit())
