"""The registry: no-pickle pyfunc logging, loading by alias/version/URL, and the promotion gate (real MLflow
on SQLite, real evaluation on a small fixed evaluation set)."""

import hashlib
import io
import os
from unittest.mock import patch  # of os.environ only

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from pipeline.configs import TrainModelConfig
from pipeline.evaluation import evaluate_composites, fixed_evaluation_set, methods_for
from pipeline.gate import decide, promotion_gate
from pipeline.registry import (
    CANDIDATE,
    CHAMPION,
    MODEL_NAME,
    default_model_uri,
    expand_model_ref,
    load_registered_model,
    log_model,
    parse_models_uri,
    register_candidate,
    register_pretrained,
)
from pipeline.tracking import tracked_run
from ssh_model import storage
from ssh_model.checkpoints import load_model
from ssh_model.composites import blob_mask
from ssh_model.images import decode_image, encode_image
from ssh_model.inference import harmonize
from ssh_model.pretrained import PRETRAINED_URI
from tests.pipeline.training_cases import (
    mlflow_store,
    one_torch_thread,  # noqa: F401 - a fixture
    save_random_model,
    smooth_photo,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EVAL = {"eval_max_side": 64, "eval_photos": 1}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("registry"))
    with mlflow_store(folder):
        yield folder


def register(store: str, seed: int, name: str, run_name: str) -> tuple[str, str]:
    """A random tiny model logged in its own run and registered as a candidate; (version, weights URL)."""
    url = save_random_model(os.path.join(store, f"{run_name}.safetensors"), seed)
    with tracked_run(run_name, resume=False):
        info = log_model(url)
    return register_candidate(info.model_uri, name).version, url


def test_given_a_champion_when_loaded_through_pyfunc_with_pickle_disabled_then_it_loads_and_predicts(store):
    version, url = register(store, seed=3, name=MODEL_NAME, run_name="pyfunc")
    decision = promotion_gate(version, TrainModelConfig(**EVAL))
    assert decision.promoted and decision.reason == "no champion yet"
    assert os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] == "false"  # the project's default

    served = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@{CHAMPION}")
    rng = np.random.default_rng(5)
    composite = smooth_photo(rng, 80, 112)
    mask_8bit = np.rint(blob_mask(80, 112, rng) * 255).astype(np.uint8)  # (H, W)
    mask_png = io.BytesIO()
    Image.fromarray(mask_8bit).save(mask_png, format="PNG")
    frame = pd.DataFrame({"composite": [encode_image(composite, "PNG")], "mask": [mask_png.getvalue()]})
    served_frame = served.predict(frame)  # encoded images in, PNG bytes out (what a serving endpoint sends)
    np.testing.assert_array_equal(
        decode_image(served_frame["harmonized"][0]), harmonize(composite, mask_8bit, load_model(url))
    )
    assert served.metadata.signature is not None  # what lets `mlflow models serve` decode base64 images
    with pytest.raises(mlflow.exceptions.MlflowException):
        served.predict({"composite": composite, "mask": mask_8bit})  # arrays are for the library, not the pyfunc

    class Pickled(mlflow.pyfunc.PythonModel):  # the kind of model the setting refuses
        def predict(self, context, model_input, params=None):
            return model_input

    with tracked_run("pickled", resume=False):
        pickled = mlflow.pyfunc.log_model(name="pickled", python_model=Pickled(), pip_requirements=["mlflow"])
    with pytest.raises(mlflow.exceptions.MlflowException, match="pickle is disallowed"):
        mlflow.pyfunc.load_model(pickled.model_uri)


def test_given_registered_versions_when_loaded_by_alias_version_or_url_then_the_same_weights_come_back(store):
    name = "loader-test"
    version, url = register(store, seed=4, name=name, run_name="loader")
    by_alias, alias_version = load_registered_model(f"models:/{name}@{CANDIDATE}")
    by_number, number_version = load_registered_model(f"models:/{name}/{version}")
    latest, _ = load_registered_model(f"models:/{name}/latest")
    memory_url = "memory://registry-test/model.safetensors"
    storage.write_bytes_atomic(memory_url, storage.read_bytes(url))
    by_url, url_version = load_registered_model(memory_url)

    assert alias_version == number_version == f"{name}/{version}"
    assert url_version == "sha256:" + hashlib.sha256(storage.read_bytes(url)).hexdigest()[:12]
    expected = load_model(url).state_dict()
    for model in (by_alias, by_number, latest, by_url):
        assert not model.training
        for key, value in model.state_dict().items():
            torch.testing.assert_close(value, expected[key])
    with pytest.raises(LookupError, match="cannot resolve"):
        load_registered_model(f"models:/{name}@no-such-alias")


def test_given_model_references_when_parsed_then_shorthands_expand_and_uris_split():
    assert expand_model_ref("champion") == f"models:/{MODEL_NAME}@champion"
    assert expand_model_ref("7", "other") == "models:/other/7"
    assert expand_model_ref("s3://b/m.safetensors") == "s3://b/m.safetensors"
    assert parse_models_uri("models:/ssh-harmonizer@champion") == ("ssh-harmonizer", "champion", None)
    assert parse_models_uri("models:/x/12") == ("x", None, "12")
    assert parse_models_uri("/tmp/model.safetensors") is None


def test_given_scores_when_decided_then_the_margin_and_the_metric_direction_count():
    assert decide(30.0, None, 0.1, higher_better=True) == (True, "no champion yet")
    assert decide(30.2, 30.0, 0.1, higher_better=True)[0]
    assert not decide(30.05, 30.0, 0.1, higher_better=True)[0]
    assert decide(90.0, 100.0, 5.0, higher_better=False)[0]  # fMSE: lower is better
    assert not decide(99.0, 100.0, 5.0, higher_better=False)[0]


def test_given_a_champion_when_a_better_then_a_worse_candidate_come_then_it_promotes_then_refuses(store):
    name = "gate-test"
    urls = {seed: save_random_model(os.path.join(store, f"gate-{seed}.safetensors"), seed) for seed in (1, 2)}
    composites = fixed_evaluation_set(max_side=64, count=1)
    models = {str(seed): load_model(url) for seed, url in urls.items()}
    scores = evaluate_composites(methods_for(models, baselines=()), composites)
    worse, better = sorted(urls, key=lambda s: scores.score(str(s), "psnr"))
    gap = scores.score(str(better), "psnr") - scores.score(str(worse), "psnr")
    margin = gap / 2
    assert gap > 0.01  # the two random networks really differ on the set

    def candidate(seed: int, run_name: str) -> str:
        with tracked_run(run_name, resume=False):
            info = log_model(urls[seed])
        return register_candidate(info.model_uri, name).version

    first = candidate(worse, "first")
    assert promotion_gate(first, TrainModelConfig(model_name=name, gate_margin=margin, **EVAL)).promoted
    second = candidate(better, "second")
    promoted = promotion_gate(second, TrainModelConfig(model_name=name, gate_margin=margin, **EVAL))
    third = candidate(worse, "third")
    refused = promotion_gate(third, TrainModelConfig(model_name=name, gate_margin=margin, **EVAL))

    client = mlflow.MlflowClient()
    assert promoted.promoted and not refused.promoted
    assert client.get_model_version_by_alias(name, CHAMPION).version == second
    assert client.get_model_version_by_alias(name, CANDIDATE).version == third
    assert promoted.candidate_score == pytest.approx(scores.score(str(better), "psnr"))
    assert promoted.champion_score == pytest.approx(scores.score(str(worse), "psnr"))
    tags = client.get_model_version(name, third).tags
    assert tags["gate.decision"] == "refused" and tags["gate.champion_version"] == str(second)
    assert float(tags["gate.candidate_score"]) == pytest.approx(scores.score(str(worse), "psnr"))
    assert float(tags["gate.champion_score"]) == pytest.approx(scores.score(str(better), "psnr"))
    assert float(tags["gate.margin"]) == pytest.approx(margin) and tags["gate.metric"] == "psnr"
    assert client.get_model_version(name, second).tags["gate.decision"] == "promoted"
    again = promotion_gate(
        second, TrainModelConfig(model_name=name, gate_margin=margin, **EVAL)
    )  # e.g. a re-run of the flow
    assert again.promoted and again.reason == "already the champion"
    assert client.get_model_version(name, second).tags["gate.decision"] == "promoted"


def test_given_no_registry_when_the_default_model_is_asked_then_the_shipped_weights_and_no_store_is_created(tmp_path):
    env = {"SSH_DATA_ROOT": str(tmp_path / "data"), "SSH_MODEL_URI": "", "MLFLOW_TRACKING_URI": ""}
    with patch.dict(os.environ, env):
        assert default_model_uri() == PRETRAINED_URI
        model, version = load_registered_model(default_model_uri())
    assert not (tmp_path / "data").exists()  # looking never creates a store
    assert version.startswith(f"{PRETRAINED_URI}/sha256:") and not model.training
    with patch.dict(os.environ, {**env, "SSH_MODEL_URI": "models:/other@x"}):
        assert default_model_uri() == "models:/other@x"  # the setting wins


def test_given_a_fresh_registry_when_the_shipped_model_is_registered_then_it_is_version_one_champion_once(tmp_path):
    with mlflow_store(str(tmp_path)):
        name = "shipped-test"
        with patch.dict(os.environ, {"SSH_MODEL_URI": ""}):
            assert default_model_uri(name) == PRETRAINED_URI  # a store, but no champion in it yet
            version = register_pretrained(name)
            assert register_pretrained(name) == version == "1"  # found again by its hash, not registered twice
            assert default_model_uri(name) == f"models:/{name}@{CHAMPION}"
        champion = mlflow.MlflowClient().get_model_version_by_alias(name, CHAMPION)
        assert str(champion.version) == "1" and champion.tags["ssh.source"] == PRETRAINED_URI
        assert "Model card" in champion.description
        model, label = load_registered_model(f"models:/{name}@{CHAMPION}")
        shipped, _ = load_registered_model(PRETRAINED_URI)
        assert label == f"{name}/1"
        assert all(
            torch.equal(a, b) for a, b in zip(model.state_dict().values(), shipped.state_dict().values(), strict=True)
        )
