"""What a user does: start the local stack, register a model, deploy from the repo root, run the deployment
on an S3 catalog, stop the stack."""

import hashlib
import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import mlflow
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from infra.local_stack import ARTIFACTS_DESTINATION, DATA_BUCKET, LocalStack
from infra.prefect_stack import PrefectStack
from infra.processes import family, is_running
from pipeline.catalog import write_catalog
from pipeline.registry import CHAMPION, MODEL_NAME, WEIGHTS_FILE, log_model, register_candidate
from pipeline.tracking import configure
from ssh_model.storage import exists, read_bytes
from tests.pipeline.batch_cases import save_tiny_model, write_case

REPO = Path(__file__).resolve().parents[2]
START, STOP = REPO / "infra" / "local" / "start.sh", REPO / "infra" / "local" / "stop.sh"


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, cwd=REPO)


def sourced(env_file: Path) -> dict[str, str]:
    """The variables a shell gets from ``source env_file`` (bash runs the file, as for a user)."""
    shell = subprocess.run(
        ["bash", "-c", '. "$1" && env -0', "bash", str(env_file)],
        capture_output=True,
        check=True,
        env={"PATH": os.environ["PATH"]},
    )
    pairs = (item.split("=", 1) for item in shell.stdout.decode().split("\0") if "=" in item)
    return {k: v for k, v in pairs if k not in ("PATH", "PWD", "SHLVL", "_")}


def prefect(env: dict[str, str], home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``prefect <args>`` from the repo root with the stack's environment (and a throwaway PREFECT_HOME)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    result = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", *args],
        capture_output=True,
        text=True,
        env={**clean, **env, "PREFECT_HOME": str(home)},
        cwd=REPO,
        timeout=timeout,
    )
    assert result.returncode == 0, f"prefect {' '.join(args)}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


def wait_for_log(stack: PrefectStack, flow_run_id: str, start: str, timeout: float = 60) -> list[str]:
    """The run's log lines once one starting with ``start`` arrived (or whatever is there at the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        logs = stack.flow_run_logs(flow_run_id)
        if any(m.startswith(start) for m in logs) or time.monotonic() > deadline:
            return logs
        time.sleep(1.0)


def register_champion(weights: str) -> str:
    """Log the weights as a model in a new experiment (artifacts go through the server) and make it the champion."""
    configure()
    experiment = mlflow.MlflowClient().create_experiment(f"e2e-{uuid.uuid4().hex[:8]}")
    with mlflow.start_run(experiment_id=experiment):
        info = log_model(weights)
    register_candidate(info.model_uri, alias=CHAMPION)
    return experiment


def test_given_the_local_stack_when_a_user_deploys_and_runs_on_an_s3_catalog_then_results_land_on_s3(tmp_path, monkeypatch):
    state = tmp_path / "stack"
    started = run(START, state, timeout=480)
    assert started.returncode == 0, started.stdout + started.stderr
    stack = LocalStack(state)
    processes = stack.processes()
    try:
        assert {p.name for p in processes} == {"s3", "mlflow", "prefect-server", "prefect-worker"}
        assert (state / "env.sh").stat().st_mode & 0o777 == 0o600
        env = sourced(state / "env.sh")
        secrets = [env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]]
        again, status = run(START, state), run(sys.executable, "-m", "infra.local_stack", "status", "--state", state)
        assert again.returncode == 0 and "already running" in again.stdout, again.stdout + again.stderr
        assert status.returncode == 0, status.stdout
        printed = started.stdout + started.stderr + again.stdout + status.stdout
        assert f"source {state / 'env.sh'}" in started.stdout
        assert not any(secret in printed for secret in secrets)

        for name, value in env.items():
            monkeypatch.setenv(name, value)
        saved_uris = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
        weights = save_tiny_model(str(tmp_path / "tiny.safetensors"))
        try:
            experiment = register_champion(weights)
        finally:
            mlflow.set_tracking_uri(saved_uris[0])
            mlflow.set_registry_uri(saved_uris[1])
        # The model's files are in the stack's S3, put there by the MLflow server.
        logged = [
            path
            for path in stack_fs(env).find(f"{ARTIFACTS_DESTINATION.removeprefix('s3://')}/{experiment}")
            if path.endswith(f"/{WEIGHTS_FILE}")
        ]
        assert logged
        digests = {hashlib.sha256(read_bytes(f"s3://{path}")).hexdigest() for path in logged}
        assert digests == {hashlib.sha256(Path(weights).read_bytes()).hexdigest()}

        prefix = f"s3://{DATA_BUCKET}/e2e-{uuid.uuid4().hex[:8]}"
        rng = np.random.default_rng(31)
        rows = [write_case(prefix, f"photo-{i}", rng, fmt=fmt) for i, fmt in enumerate(["JPEG", "PNG", "JPEG"])]
        catalog = f"{prefix}/catalog.parquet"
        write_catalog(rows, catalog)

        home = tmp_path / "client"
        deployed = prefect(env, home, "deploy", "--all")
        assert "harmonize-batch/default" in deployed.stdout, deployed.stdout
        parameters = [
            f"catalog={catalog}",
            f"output_prefix={prefix}/out",
            "config=" + json.dumps({"model_uri": f"models:/{MODEL_NAME}@{CHAMPION}", "concurrency": 1}),
        ]
        flow_run = prefect(
            env,
            home,
            "deployment",
            "run",
            "harmonize-batch/default",
            *[arg for p in parameters for arg in ("-p", p)],
            timeout=120,
        )
        flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", flow_run.stdout).group(1)
        handle = stack.prefect()
        result = handle.wait_for_flow_run(flow_run_id, timeout=480)
        logs = wait_for_log(handle, flow_run_id, "done: ")  # the last lines ship just after the final state
        assert result["state_type"] == "COMPLETED", "\n".join(logs) + "\n" + handle.logs("worker.log")

        outputs = [f"{prefix}/out/photo-{i}{ext}" for i, ext in enumerate([".jpg", ".png", ".jpg"])]
        assert [exists(url) for url in outputs] == [True] * 3
        results = pq.read_table(pa.BufferReader(read_bytes(f"{prefix}/out/_results/results.parquet"))).to_pylist()
        assert sorted((r["id"], r["status"]) for r in results) == [(f"photo-{i}", "ok") for i in range(3)]
        assert {r["model_version"] for r in results} == {f"{MODEL_NAME}/1"}
        assert all(r["composite_sha256"] for r in results)
        assert exists(f"{prefix}/out/_results/report.html")
        assert any(m.startswith("progress 3/3 rows") for m in logs)
        assert any(f"{prefix}/out/_results/report.html" in m for m in logs), "\n".join(logs)
    finally:
        members = {pid: since for p in processes for pid, since in family(p.pid).items()}
        stopped = run(STOP, state, timeout=180)

    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert [p.name for p in processes if is_running(p.pid, p.started)] == []
    assert [pid for pid, since in members.items() if is_running(pid, since)] == []
    assert not (state / "env.sh").exists()
    again = run(STOP, state)
    assert again.returncode == 0 and "nothing to stop" in again.stdout, again.stdout + again.stderr


def stack_fs(env: dict[str, str]):
    """An s3fs filesystem on the stack's S3 (its own instance, not fsspec's cached one)."""
    import s3fs

    return s3fs.S3FileSystem(
        key=env["AWS_ACCESS_KEY_ID"],
        secret=env["AWS_SECRET_ACCESS_KEY"],
        skip_instance_cache=True,
        client_kwargs={"endpoint_url": env["AWS_ENDPOINT_URL"], "region_name": env["AWS_DEFAULT_REGION"]},
    )
