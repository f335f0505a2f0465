"""Flow ``compare-models`` through Prefect's test harness: registry versions, aliases, a checkpoint URL and
the baselines on the same evaluation set; table printed, artifacts in a comparison MLflow run."""

import mlflow
import pytest

from flows.compare_models import compare_models
from pipeline.configs import CompareConfig, TrainModelConfig
from pipeline.gate import promotion_gate
from pipeline.registry import log_model, register_candidate
from pipeline.tracking import KIND_TAG, tracked_run
from tests.pipeline.training_cases import (
    mlflow_store,
    one_torch_thread,  # noqa: F401 - a fixture
    save_random_model,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NAME = "compare-test"
EVAL = {"eval_max_side": 64, "eval_photos": 1}


@pytest.fixture(scope="module")
def registry(tmp_path_factory, prefect_harness):
    folder = str(tmp_path_factory.mktemp("compare-flow"))
    with mlflow_store(folder):
        urls = []
        for seed in (1, 2):
            url = save_random_model(f"{folder}/model-{seed}.safetensors", seed)
            with tracked_run(f"train-{seed}", resume=False):
                version = register_candidate(log_model(url).model_uri, NAME).version
            if seed == 1:
                promotion_gate(version, TrainModelConfig(model_name=NAME, **EVAL))
            urls.append(url)
        urls.append(save_random_model(f"{folder}/colour.safetensors", 3, preset="colour-tiny"))
        yield folder, urls


def test_given_versions_aliases_and_a_file_when_compared_then_one_table_covers_them_and_the_baselines(registry, run_logs):
    folder, urls = registry
    result = compare_models(
        data_root=folder, config=CompareConfig(models=["champion", "2", urls[1], urls[2]], model_name=NAME, **EVAL)
    )
    logged = "\n".join(run_logs)  # the table reaches the run's log (and the CLI prints it)

    assert result["models"]["champion"] == f"{NAME}/1" and result["models"]["2"] == f"{NAME}/2"
    assert result["models"][urls[1]].startswith("sha256:")
    file_label, colour_label = result["models"][urls[1]], result["models"][urls[2]]
    rows = {row["method"]: row for row in result["summary"]}
    methods = list(rows)
    assert methods == [f"{NAME}/1", f"{NAME}/2", file_label, colour_label, "identity", "reinhard", "histogram"]
    assert rows[colour_label]["psnr"] != pytest.approx(rows["identity"]["psnr"])  # the colour family ran
    assert rows[file_label]["psnr"] == pytest.approx(rows[f"{NAME}/2"]["psnr"])  # same weights, same scores
    assert all(f"| {m} |" in logged and f"| {m} |" in result["table"] for m in methods)
    assert {row["level"] for row in result["by_level"]} == {"mild", "medium", "strong"}

    client = mlflow.MlflowClient()
    run = client.get_run(result["run_id"])
    artifacts = {a.path for a in client.list_artifacts(result["run_id"], "comparison")}
    assert run.data.tags[KIND_TAG] == "comparison"
    assert {
        "comparison/summary.json",
        "comparison/summary.csv",
        "comparison/grid.png",
        "comparison/table.md",
        "comparison/fixed_items.csv",
    } <= artifacts
    assert run.data.metrics[f"fixed/{NAME}/1/psnr"] == pytest.approx(rows[f"{NAME}/1"]["psnr"])


def test_given_a_single_method_when_compared_then_the_flow_refuses(registry):
    folder, _ = registry
    with pytest.raises(ValueError, match="nothing to compare"):
        compare_models(data_root=folder, config=CompareConfig(models=["champion"], baselines=[], model_name=NAME, **EVAL))
