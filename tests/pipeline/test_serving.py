"""Serving with MLflow: the real scoring server (``mlflow models serve``) on loopback answers a
``dataframe_split`` request of base64 images; versions registered without the serving signature are
refused with the command that upgrades them (real MLflow on SQLite)."""

import base64
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request

import mlflow
import numpy as np
import pytest

from flows.cli import main
from pipeline.registry import (
    CHAMPION,
    PIP_REQUIREMENTS,
    PYFUNC_CODE,
    log_model,
    register_candidate,
    servable_problem,
    upgrade_version,
)
from pipeline.serving import serve_command
from pipeline.tracking import tracked_run
from ssh_model.checkpoints import load_model
from ssh_model.composites import blob_mask
from ssh_model.images import decode_image, encode_image
from ssh_model.inference import harmonize
from tests.pipeline.training_cases import mlflow_store, save_random_model, smooth_photo

SERVER_START_S = 180


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("serving"))
    with mlflow_store(folder) as uri:
        yield folder, uri


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def wait_until_up(url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"the scoring server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2):
                return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"the scoring server did not answer /ping within {SERVER_START_S}s")


def register_tiny(store_folder: str, name: str, seed: int, signature: bool = True) -> tuple[str, str]:
    url = save_random_model(os.path.join(store_folder, f"{name}-{seed}.safetensors"), seed=seed)
    with tracked_run(f"{name}-{seed}", resume=False):
        if signature:
            info = log_model(url)
        else:  # what versions registered before the serving signature look like
            info = mlflow.pyfunc.log_model(
                name="model", python_model=PYFUNC_CODE, artifacts={"weights": url}, pip_requirements=PIP_REQUIREMENTS
            )
    return register_candidate(info.model_uri, name, alias=CHAMPION).version, url


def test_given_a_registered_champion_when_served_then_a_dataframe_split_request_is_harmonized(store):
    # given: a champion, and MLflow's scoring server started for it on loopback, as the README shows
    folder, tracking_uri = store
    _, weights = register_tiny(folder, "served", seed=7)
    port = free_port()
    command, env = serve_command(f"models:/served@{CHAMPION}", "127.0.0.1", port)
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(url, server)
        rng = np.random.default_rng(3)
        composite = smooth_photo(rng, 48, 64)
        mask = np.rint(blob_mask(48, 64, rng) * 255).astype(np.uint8)
        empty = np.zeros_like(mask)

        # when: one good row, then a row whose mask selects nothing
        status, answer = post(
            f"{url}/invocations",
            {
                "dataframe_split": {
                    "columns": ["composite", "mask"],
                    "data": [[b64(encode_image(composite, "PNG")), b64(encode_image(mask, "PNG"))]],
                }
            },
        )
        bad_status, bad = post(
            f"{url}/invocations",
            {
                "dataframe_split": {
                    "columns": ["composite", "mask"],
                    "data": [[b64(encode_image(composite, "PNG")), b64(encode_image(empty, "PNG"))]],
                }
            },
        )
        no_mask_status, no_mask = post(
            f"{url}/invocations",
            {"dataframe_split": {"columns": ["composite"], "data": [[b64(encode_image(composite, "JPEG"))]]}},
        )
        size_status, size = post(
            f"{url}/invocations",
            {
                "params": {"size": 1},
                "dataframe_split": {
                    "columns": ["composite", "mask"],
                    "data": [[b64(encode_image(composite, "PNG")), b64(encode_image(mask, "PNG"))]],
                },
            },
        )
    finally:
        server.terminate()
        server.wait(timeout=30)

    # then: the harmonized PNG is what the library makes; the bad row is a 400 naming the reason
    assert status == 200, answer
    harmonized = decode_image(base64.b64decode(answer["predictions"][0]["harmonized"]))
    np.testing.assert_array_equal(harmonized, harmonize(composite, mask, load_model(weights)))
    assert bad_status == 400 and "empty_mask" in bad["message"] and "row 0 mask" in bad["message"]
    assert no_mask_status == 400 and "no_mask" in no_mask["message"]
    assert size_status == 400 and "params.size" in size["message"]


def test_given_a_version_without_the_signature_then_serve_refuses_in_one_line_and_upgrade_fixes_it(store, capsys):
    # given: a champion logged the way versions were before the serving signature
    folder, _ = store
    old, _ = register_tiny(folder, "unsigned", seed=8, signature=False)
    uri = f"models:/unsigned@{CHAMPION}"

    # when / then: serving is refused with the way out, before any server starts
    assert "upgrade-model" in servable_problem(uri)
    capsys.readouterr()
    assert main(["serve", uri, "--port", str(free_port())]) == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error
    assert [line for line in error.splitlines() if line.startswith("ssh-harmonize")] == [
        f"ssh-harmonize serve: error: {servable_problem(uri)} [not_a_model]"
    ]

    # when: upgraded, the champion is a new version with the signature
    new = upgrade_version(uri)
    assert int(new) == int(old) + 1
    assert str(mlflow.MlflowClient().get_model_version_by_alias("unsigned", CHAMPION).version) == new
    assert servable_problem(uri) is None
