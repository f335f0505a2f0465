"""What a user does: start the stack, deploy from the repo root, run the deployment on an S3 catalog."""

import re
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from infra.prefect_stack import PrefectStack
from ssh_model.storage import exists, read_bytes
from tasks.catalog import write_catalog
from tests.tasks.batch_cases import save_tiny_model, write_case

REPO = Path(__file__).resolve().parents[2]


def wait_for_log(stack: PrefectStack, flow_run_id: str, start: str, timeout: float = 60) -> list[str]:
    """The run's log lines once one starting with ``start`` arrived (or whatever is there at the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        logs = stack.flow_run_logs(flow_run_id)
        if any(m.startswith(start) for m in logs) or time.monotonic() > deadline:
            return logs
        time.sleep(1.0)


def test_given_a_deployed_flow_when_a_user_runs_it_on_an_s3_catalog_then_results_land_on_s3(
        tmp_path, e2e_s3_bucket):
    prefix = f"s3://{e2e_s3_bucket}/e2e-{uuid.uuid4().hex[:8]}"
    rng = np.random.default_rng(31)
    rows = [write_case(prefix, f"photo-{i}", rng, fmt=fmt) for i, fmt in enumerate(["JPEG", "PNG", "JPEG"])]
    catalog = f"{prefix}/catalog.parquet"
    write_catalog(rows, catalog)
    model = save_tiny_model(f"{prefix}/models/tiny.safetensors")

    with PrefectStack(tmp_path / "prefect", services=False) as stack:
        deployed = stack.cli("deploy", "--all", cwd=REPO, timeout=300)
        assert "harmonize-batch/default" in deployed.stdout, deployed.stdout
        parameters = [f"catalog={catalog}", f"output_prefix={prefix}/out", f"model={model}", "concurrency=1"]
        started = stack.cli("deployment", "run", "harmonize-batch/default",
                            *[arg for p in parameters for arg in ("-p", p)], cwd=REPO, timeout=120)
        flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", started.stdout).group(1)
        run = stack.wait_for_flow_run(flow_run_id, timeout=480)
        logs = wait_for_log(stack, flow_run_id, "done: ")  # the last lines ship just after the final state
        assert run["state_type"] == "COMPLETED", "\n".join(logs) + "\n" + stack.logs("worker.log")

    outputs = [f"{prefix}/out/photo-{i}{ext}" for i, ext in enumerate([".jpg", ".png", ".jpg"])]
    assert [exists(url) for url in outputs] == [True] * 3
    results = pq.read_table(pa.BufferReader(read_bytes(f"{prefix}/out/_results/results.parquet"))).to_pylist()
    assert sorted((r["id"], r["status"]) for r in results) == [(f"photo-{i}", "ok") for i in range(3)]
    assert all(r["model_version"] and r["composite_sha256"] for r in results)
    assert exists(f"{prefix}/out/_results/report.html")
    assert any(m.startswith("progress 3/3 rows") for m in logs)
    assert any(f"{prefix}/out/_results/report.html" in m for m in logs), "\n".join(logs)
