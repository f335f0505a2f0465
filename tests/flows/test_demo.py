"""The main job (flow ``demo``: the shipped model as champion -> retrain -> harmonize-batch) on a tiny
budget, run twice: the first run builds everything and keeps the better champion, the second reuses it all."""

import mlflow
import pyarrow.parquet as pq
import pytest

from flows.demo import HELD_OUT, VAL_TWIN, demo
from pipeline.configs import demo_training, demo_triplets
from pipeline.registry import CHAMPION, MODEL_NAME
from ssh_model import storage
from ssh_model.settings import get_settings
from tests.pipeline.training_cases import mlflow_store, one_torch_thread  # noqa: F401 - a fixture

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {  # the demo's presets on a tiny budget
    "triplets": demo_triplets(get_settings().seed).model_copy(update={"per_image": 2}),
    "train": demo_training().model_copy(
        update={"steps": 2, "preset": "tiny", "num_workers": 1, "eval_max_side": 64, "eval_photos": 1}
    ),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, prefect_harness, ray_local):
    data_root = str(tmp_path_factory.mktemp("demo"))
    with mlflow_store(data_root):
        first = demo(data_root=data_root, **TINY)
        first_results = pq.read_table(first["harmonize"]["results_url"]).to_pylist()
        second = demo(data_root=data_root, **TINY)
        second_results = pq.read_table(second["harmonize"]["results_url"]).to_pylist()
        second_report = storage.read_bytes(second["report"]).decode()
        versions = mlflow.MlflowClient().search_model_versions(f"name='{MODEL_NAME}'")
        champion = mlflow.MlflowClient().get_model_version_by_alias(MODEL_NAME, CHAMPION)
    yield {
        "root": data_root,
        "first": first,
        "second": second,
        "versions": versions,
        "champion": champion,
        "first_results": first_results,
        "second_results": second_results,
        "second_report": second_report,
    }


@pytest.mark.timeout(900)
def test_given_embedded_defaults_when_the_demo_runs_then_a_champion_harmonizes_held_out_composites(runs):
    first = runs["first"]
    # the training never saw the held-out photos, nor the twin of the photo that picks the checkpoint
    manifest = pq.read_table(f"{runs['root']}/images/manifest.parquet").to_pylist()
    assert len(manifest) == 5
    assert not any(name in row["source_url"] for row in manifest for name in (*HELD_OUT, VAL_TWIN))
    assert [row["source_url"].rsplit("/", 1)[-1] for row in manifest if row["split"] == "val"] == ["motorcycle_right.png"]
    assert first["retrain"]["train"]["model_step"] in (0, 2)  # picked on the val photo's composites
    # the shipped model is version 1 and the champion; two training steps on four photos do not displace it
    gate = first["retrain"]["train"]["gate"]
    assert not gate["promoted"] and gate["champion_version"] == "1" and str(runs["champion"].version) == "1"
    assert gate["champion_score"] > gate["candidate_score"]
    assert runs["champion"].tags["ssh.source"] == "pretrained" and "Model card" in runs["champion"].description
    # every held-out composite is harmonized, scored against its ground truth and shown in the report
    harmonized = first["harmonize"]
    assert harmonized["ok"] == harmonized["total"] == 3 * len(HELD_OUT) and harmonized["error"] == 0
    results = runs["first_results"]
    assert {row["status"] for row in results} == {"ok"}
    assert all(row["model_psnr"] > 0 and row["identity_psnr"] > 0 and row["reinhard_psnr"] > 0 for row in results)
    assert all(storage.exists(row["output"]) for row in results)
    report = storage.read_bytes(first["report"]).decode()
    assert all(row["id"] in report for row in results)
    assert first["champion"] == harmonized["model_version"] == f"{MODEL_NAME}/1"
    # the table the README's command prints: shipped, fresh and the three baselines, means over the composites
    lines = first["table"].splitlines()
    assert [line.split("|")[1].strip() for line in lines[2:]] == [
        f"shipped ({MODEL_NAME}/1, champion)",
        f"fresh ({MODEL_NAME}/2)",
        "identity",
        "reinhard",
        "histogram",
    ]
    identity = lines[4].split("|")
    assert float(identity[2]) == pytest.approx(sum(r["identity_psnr"] for r in results) / len(results), abs=0.01)


def test_given_a_finished_demo_when_run_again_then_it_reuses_the_data_the_model_and_the_outputs(runs):
    second = runs["second"]
    assert second["retrain"]["ingest"]["added"] == 0
    assert second["retrain"]["version"] == runs["first"]["retrain"]["version"]
    assert second["retrain"]["train"]["start_steps"] == [TINY["train"].steps]  # resumed at its end: no new steps
    assert len(runs["versions"]) == 2  # the shipped model and the fresh one, neither registered twice
    assert second["harmonize"]["skipped"] == second["harmonize"]["total"]
    assert {row["status"] for row in runs["second_results"]} == {"skipped"}
    # and the rewritten report still shows every row's pictures (from its inputs and its existing output)
    assert runs["second_report"].count("data:image/jpeg;base64") >= 4 * second["harmonize"]["total"]
    assert sorted(row["output"] for row in runs["second_results"]) == sorted(row["output"] for row in runs["first_results"])
    assert second["table"] == runs["first"]["table"]  # the same scores, read back from the kept results
