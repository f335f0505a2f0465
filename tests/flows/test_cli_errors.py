"""One-line CLI errors: every user error of ``ssh-harmonize`` (unknown model or alias, no registry, unsupported URL,
missing backend, missing or non-model files) is one line naming the user's own argument, exit status 2, no
traceback, and nothing written (no ``data/`` from a failed lookup, no output)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flows.cli import main
from pipeline.registry import WEIGHTS_FILE
from tests.pipeline.batch_cases import ellipse_mask, encode, smooth_photo
from tests.pipeline.training_cases import mlflow_store

SIZE = (40, 48)
NO_REGISTRY = "models:/no-such-model@champion"


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """A fresh working directory with a composite and its mask; no registry configured and none on disk."""
    monkeypatch.chdir(tmp_path)
    for name in ("MLFLOW_TRACKING_URI", "SSH_DATA_ROOT", "SSH_MODEL_URI"):
        monkeypatch.delenv(name, raising=False)
    rng = np.random.default_rng(0)
    (tmp_path / "c.png").write_bytes(encode(smooth_photo(rng, *SIZE), "PNG"))
    (tmp_path / "m.png").write_bytes(encode(ellipse_mask(*SIZE), "PNG"))
    (tmp_path / "small.png").write_bytes(encode(ellipse_mask(20, 24), "PNG"))
    (tmp_path / "garbage.png").write_bytes(b"garbage")
    (tmp_path / "pickled.safetensors").write_bytes(b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00}\x94.")  # a pickle
    return tmp_path


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("ssh-harmonize")]


def assert_nothing_written(workdir: Path, before: set[str]) -> None:
    assert {p.name for p in workdir.iterdir()} == before  # no data/, no output
    assert not (workdir / "data").exists()


@pytest.mark.parametrize(
    ("model", "message", "reason"),
    [
        (NO_REGISTRY, "there is no model registry: MLFLOW_TRACKING_URI is not set", "no_registry"),
        ("models:/ssh-harmonizer/3", "there is no model registry", "no_registry"),
        ("models:/not-a-uri", "not a models:/name@alias or models:/name/version URI", "unknown_model"),
        ("gs://b/m.safetensors", "no filesystem backend for this URL scheme is installed", "unsupported_url"),
        ("foo://x", "unsupported URL", "unsupported_url"),
        ("missing.safetensors", "no such file or object", "missing"),
        ("c.png", "not a safetensors file", "not_a_model"),
        ("pickled.safetensors", "not a safetensors file", "not_a_model"),
    ],
)
def test_given_a_model_that_cannot_be_loaded_when_harmonizing_then_one_line_names_it_and_nothing_is_written(
    workdir, capsys, model, message, reason
):
    before = {p.name for p in workdir.iterdir()}

    assert main(["harmonize", "c.png", "m.png", "-o", "out.png", "--model", model]) == 2

    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith(f"ssh-harmonize harmonize: error: model {model}: ")
    assert message in lines[0]
    assert lines[0].endswith(f"[{reason}]")  # the code a batch job's results table would record
    assert WEIGHTS_FILE not in lines[0]  # never a temporary copy's path
    assert_nothing_written(workdir, before)


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("gs://b/out.png", "output gs://b/out.png: no filesystem backend for this URL scheme is installed"),
        ("foo://out.png", "output foo://out.png: unsupported URL"),
    ],
)
def test_given_an_output_url_that_cannot_be_written_when_harmonizing_then_it_fails_first_in_one_line(
    workdir, capsys, output, message
):
    before = {p.name for p in workdir.iterdir()}

    assert main(["harmonize", "c.png", "m.png", "-o", output, "--model", NO_REGISTRY]) == 2  # before the model

    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and message in lines[0]
    assert_nothing_written(workdir, before)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope.png", "m.png"], "nope.png: no such file or object"),
        (["foo://c.png", "m.png"], "foo://c.png: unsupported URL"),
        (["c.png", "gs://b/m.png"], "gs://b/m.png: no filesystem backend for this URL scheme is installed"),
        (["garbage.png", "m.png"], "garbage.png: not a recognised image format"),
        (["c.png", "small.png"], "mask small.png is 24x20 but composite c.png is 48x40"),
    ],
)
def test_given_bad_input_files_when_harmonizing_then_one_line_names_the_file(workdir, capsys, tiny_model_url, args, message):
    before = {p.name for p in workdir.iterdir()}

    assert main(["harmonize", *args, "-o", "out.png", "--model", tiny_model_url]) == 2

    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and message in lines[0]
    assert_nothing_written(workdir, before)


def test_given_a_registry_without_that_model_when_harmonizing_or_evaluating_then_one_line_says_so(
    workdir, capsys, tmp_path_factory
):
    store = tmp_path_factory.mktemp("registry")
    before = {p.name for p in workdir.iterdir()}
    with mlflow_store(str(store)):
        assert main(["harmonize", "c.png", "m.png", "-o", "out.png", "--model", NO_REGISTRY]) == 2
        harmonize_lines = error_lines(capsys.readouterr().err)
        (workdir / "cat.csv").write_text("id,composite,mask,target\na,c.png,m.png,c.png\n")
        assert main(["evaluate", "cat.csv", "--model", "models:/ssh-harmonizer@no-such-alias"]) == 2
        evaluate_lines = error_lines(capsys.readouterr().err)

    assert len(harmonize_lines) == 1 and harmonize_lines[0].startswith(
        f"ssh-harmonize harmonize: error: model {NO_REGISTRY}: cannot resolve it in the registry at sqlite:"
    )
    assert "no-such-model" in harmonize_lines[0].split("(", 1)[1]  # MLflow's own reason, on the same line
    assert len(evaluate_lines) == 1 and evaluate_lines[0].startswith(
        "ssh-harmonize evaluate: error: model models:/ssh-harmonizer@no-such-alias: cannot resolve it"
    )
    assert_nothing_written(workdir, {*before, "cat.csv"})


def test_given_no_registry_when_evaluating_with_a_registry_uri_then_it_exits_2_without_creating_one(workdir, capsys):
    (workdir / "cat.csv").write_text("id,composite,mask,target\na,c.png,m.png,c.png\n")
    before = {p.name for p in workdir.iterdir()}

    assert main(["evaluate", "cat.csv", "--model", NO_REGISTRY, "--json", "gs://b/scores.json"]) == 2
    assert "--json gs://b/scores.json: no filesystem backend" in capsys.readouterr().err
    assert main(["evaluate", "cat.csv", "--model", NO_REGISTRY]) == 2

    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and f"model {NO_REGISTRY}: there is no model registry" in lines[0]
    assert_nothing_written(workdir, before)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (NO_REGISTRY, "there is no model registry"),
        ("gs://b/m.safetensors", "no filesystem backend for this URL scheme is installed"),
    ],
)
def test_given_a_bad_model_when_the_installed_command_runs_then_one_line_exit_2_no_traceback_no_data(
    workdir, model, message
):
    command = Path(sys.executable).parent / "ssh-harmonize"
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "SSH_DATA_ROOT", "SSH_MODEL_URI")}
    before = {p.name for p in workdir.iterdir()}

    done = subprocess.run(
        [str(command), "harmonize", "c.png", "m.png", "-o", "out.png", "--model", model],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=workdir,
        env={**env, "OMP_NUM_THREADS": "1"},
    )

    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stdout == ""
    lines = error_lines(done.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"ssh-harmonize harmonize: error: model {model}: ")
    assert message in lines[0]
    assert_nothing_written(workdir, before)
