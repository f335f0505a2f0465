"""Flow ``train-model`` through Prefect's test harness on a real local Ray and MLflow on SQLite: train,
track, evaluate, register, gate; a re-run with the same run name resumes from its checkpoint."""

import json

import mlflow
import numpy as np
import pytest

from flows.train_model import train_model
from pipeline.configs import TrainModelConfig
from pipeline.registry import CANDIDATE, CHAMPION, load_registered_model
from pipeline.training_worker import JOB_FILE
from ssh_model import storage
from ssh_model.checkpoints import load_model, load_model_metadata
from ssh_model.colour_net import ColourNet
from tests.pipeline.training_cases import (
    mlflow_store,
    one_torch_thread,  # noqa: F401 - a fixture
    write_triplet_version,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

OPTIONS = {
    "preset": "tiny",
    "batch_size": 2,
    "num_workers": 1,
    "checkpoint_every": 2,
    "log_every": 1,
    "sample_every": 2,
    "warmup_steps": 1,
    "eval_max_side": 64,
    "eval_photos": 1,
    "val_limit": 4,
    "gate_margin": 0.0,
    "model_name": "flow-test",
    "resource_wait_s": 60,
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, prefect_harness, ray_local):
    data_root = str(tmp_path_factory.mktemp("train-flow"))
    write_triplet_version(f"{data_root}/triplets/v1", np.random.default_rng(7), {"train": 2, "val": 1})
    with mlflow_store(data_root):
        first = train_model(
            data_root=data_root, version="v1", run_name="nightly", config=TrainModelConfig(steps=2, **OPTIONS)
        )
        client = mlflow.MlflowClient()
        run_before = client.get_run(first["run_id"])
        saved_config = mlflow.artifacts.load_dict(f"runs:/{first['run_id']}/config.json")  # before the rerun's
        second = train_model(
            data_root=data_root, version="v1", run_name="nightly", config=TrainModelConfig(steps=4, **OPTIONS)
        )
        run = client.get_run(first["run_id"])
        artifacts = {a.path for a in client.list_artifacts(first["run_id"], "evaluation")}
        versions = {v: client.get_model_version("flow-test", v) for v in ("1", "2")}
        aliases = {a: str(client.get_model_version_by_alias("flow-test", a).version) for a in (CANDIDATE, CHAMPION)}
        losses = client.get_metric_history(first["run_id"], "loss/total")
        colour = train_model(
            data_root=data_root,
            version="v1",
            run_name="colour",
            config=TrainModelConfig(steps=2, model_family="colour", **{**OPTIONS, "model_name": "flow-test-colour"}),
        )
        colour_run = client.get_run(colour["run_id"])
        colour_champion, colour_version = load_registered_model("models:/flow-test-colour@champion")
    yield {
        "root": data_root,
        "first": first,
        "second": second,
        "run_before": run_before,
        "run": run,
        "artifacts": artifacts,
        "versions": versions,
        "aliases": aliases,
        "saved_config": saved_config,
        "losses": losses,
        "colour": colour,
        "colour_run": colour_run,
        "colour_champion": colour_champion,
        "colour_version": colour_version,
    }


@pytest.mark.timeout(600)
def test_given_a_triplet_version_when_trained_then_the_run_has_config_tags_curves_and_evaluations(runs):
    first, run = runs["first"], runs["run"]
    assert first["steps"] == 2 and first["start_steps"] == [0]
    assert run.data.params["job.train.steps"] == "2" and run.data.params["job.model"] == "tiny"
    assert run.data.tags["data.version"].startswith("v1@") and run.data.tags["git.commit"]
    metrics = run.data.metrics
    for method in ("model", "identity", "reinhard", "histogram"):
        assert np.isfinite(metrics[f"fixed/{method}/psnr"]) and np.isfinite(metrics[f"val/{method}/fmse"])
    assert metrics["train/samples_per_s"] > 0
    assert {
        "evaluation/fixed_summary.json",
        "evaluation/fixed_summary.csv",
        "evaluation/val_items.csv",
        "evaluation/fixed_grid.png",
        "evaluation/tables.md",
    } <= runs["artifacts"]
    assert sorted({m.step for m in runs["losses"]}) == [1, 2, 3, 4]  # both runs' curves, one MLflow run
    metadata = load_model_metadata(first["model_url"])
    assert metadata["run_id"] == first["run_id"]


def test_given_a_training_when_it_ran_then_its_config_is_in_mlflow_the_checkpoints_and_the_model_file(runs):
    first, run = runs["first"], runs["run"]
    asked = TrainModelConfig(steps=2, **OPTIONS)
    # resolved for this CPU cluster: the unset "by hardware" fields are decided, the given ones kept
    assert run.data.params["config.lr"] == str(asked.lr) and run.data.params["config.use_gpu"] == "False"
    assert run.data.params["config.checkpoint_every"] == "2" and run.data.params["config.loader_workers"] == "0"
    saved = runs["saved_config"]
    assert TrainModelConfig.model_validate(saved["requested"]) == asked
    assert TrainModelConfig.model_validate(saved["resolved"]).steps == 2
    job = json.loads(storage.read_bytes(storage.join(runs["second"]["checkpoint"], JOB_FILE)))
    assert TrainModelConfig.model_validate(job["config"]).steps == 4  # the rerun's, at its last checkpoint
    in_file = TrainModelConfig.model_validate_json(load_model_metadata(first["model_url"])["train_config"])
    assert in_file.steps == 4  # the same run name: the rerun's model file, with its config
    assert in_file.model_copy(update={"steps": 2}) == TrainModelConfig.model_validate(saved["resolved"])


def test_given_the_same_run_name_when_run_again_with_more_steps_then_it_resumes_from_the_checkpoint(runs):
    first, second = runs["first"], runs["second"]
    assert second["run_id"] == first["run_id"]  # the same MLflow run
    assert second["start_steps"] == [2] and second["steps"] == 4  # from the step-2 checkpoint, not from 0
    assert "resumed.job.train.steps" not in runs["run_before"].data.tags
    assert runs["run"].data.tags["resumed.job.train.steps"] == "4"  # params stay, the change is recorded
    assert runs["run"].data.params["job.train.steps"] == "2"
    assert storage.exists(f"{runs['root']}/training/nightly/step-00000004")
    assert load_model(second["model_url"]).config == {"width": 4, "norm": "batch"}


def test_given_two_trainings_when_registered_then_candidate_moves_and_the_gate_records_its_decision(runs):
    first, second, versions = runs["first"], runs["second"], runs["versions"]
    assert first["registered_version"] == "flow-test/1" and second["registered_version"] == "flow-test/2"
    assert first["gate"]["promoted"] and first["gate"]["reason"] == "no champion yet"
    assert runs["aliases"][CANDIDATE] == "2"
    tags = versions["2"].tags
    assert tags["gate.decision"] == ("promoted" if second["gate"]["promoted"] else "refused")
    assert tags["gate.champion_version"] == "1"
    assert float(tags["gate.candidate_score"]) == pytest.approx(second["gate"]["candidate_score"])
    assert float(tags["gate.champion_score"]) == pytest.approx(second["gate"]["champion_score"])
    expected_champion = "2" if second["gate"]["promoted"] else "1"
    assert runs["aliases"][CHAMPION] == expected_champion
    assert versions["1"].tags["ssh.steps"] == "2" and versions["2"].tags["ssh.steps"] == "4"


def test_given_the_colour_family_when_trained_then_the_same_pipeline_tracks_registers_and_serves_it(runs):
    colour, run = runs["colour"], runs["colour_run"]
    assert run.data.params["job.model"] == "colour-tiny" and run.data.tags["model.family"] == "colour"
    assert np.isfinite(run.data.metrics["fixed/model/psnr"]) and np.isfinite(run.data.metrics["val/model/psnr"])
    assert colour["registered_version"] == "flow-test-colour/1" and colour["gate"]["promoted"]
    model = load_model(colour["model_url"])
    assert isinstance(model, ColourNet) and model.config["family"] == "colour"
    assert isinstance(runs["colour_champion"], ColourNet) and runs["colour_version"].startswith("flow-test-colour/1")
