"""Durable, verified results: the driver of a real job is killed with ``kill -9`` and the job re-run (local Ray);
outputs that are missing or differ from their record are made again; records of older versions still load.

The killed job reads its composites from a loopback HTTP server that serves each one only some time after
the previous row's output appeared, so outputs appear at a steady pace whatever the machine's load (the
fetch stage cannot run ahead of the model actor), and the kill lands mid-job.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.batch_inference import run_catalog
from pipeline.catalog import read_catalog, write_catalog
from pipeline.configs import BatchConfig
from pipeline.results import list_fragments, load_previous, read_results, results_url
from ssh_model.storage import read_bytes, write_bytes_atomic
from tests.pipeline.batch_cases import write_case
from tests.pipeline.http_cases import loopback_server

REPO = Path(__file__).resolve().parents[2]
ROWS = 24
RELEASE_EVERY_S = 0.4  # a composite is served this long after the previous row's output: ~10 s of outputs
RELEASE_LIMIT_S = 120.0
DURABLE_WITHIN_S = 4.0  # an output this old at the kill must have its record (fragments flush every 2 s)
OLD_OUTPUTS_AT_KILL = 3  # kill once this many outputs are over DURABLE_WITHIN_S + 1 s old (and the job still runs)
START_LIMIT_S = 240.0  # Ray workers, the model actor and the first output, on a busy machine

JOB = """
import sys
from pipeline.configs import BatchConfig
from pipeline.batch_inference import run_catalog
from pipeline.catalog import read_catalog

catalog = read_catalog(sys.argv[1], output_prefix=sys.argv[2])
run_catalog(catalog, BatchConfig(model_uri=sys.argv[3], concurrency=1, fetch_threads=1, progress_every_s=1.0))
"""


@dataclass
class PacedFiles:
    """Files served at ``url/<name>``, each ``every_s`` after the file ``after[name]`` appeared (at once without)."""

    url: str
    every_s: float
    files: dict[str, bytes] = field(default_factory=dict)
    after: dict[str, Path] = field(default_factory=dict)

    def wait_for_turn(self, name: str) -> None:
        previous = self.after.get(name)
        deadline = time.time() + RELEASE_LIMIT_S
        while previous is not None and not previous.exists() and time.time() < deadline:
            time.sleep(0.02)
        if previous is not None and previous.exists():
            time.sleep(max(0.0, previous.stat().st_mtime + self.every_s - time.time()))


class PacedHandler(BaseHTTPRequestHandler):
    state: PacedFiles  # set on a subclass by the fixture

    def _answer(self) -> None:
        name = self.path.strip("/")
        if name not in self.state.files:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.state.wait_for_turn(name)
        body = self.state.files[name]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(body)

    do_GET = do_HEAD = _answer

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def paced_http() -> Iterator[PacedFiles]:
    with loopback_server(PacedHandler, lambda url: PacedFiles(url=url, every_s=RELEASE_EVERY_S), "paced-http") as state:
        yield state


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def visible_outputs(out: Path) -> dict[str, tuple[float, bytes]]:
    """name -> (mtime, bytes) of the outputs (not ``_results``, nor hidden temporary files)."""
    return {
        p.name: (p.stat().st_mtime, p.read_bytes())
        for p in out.iterdir()
        if p.name != "_results" and not p.name.startswith(".")
    }


def all_files(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def start_job(catalog_url: str, out: Path, model_url: str, ray_address: str, log: Path) -> subprocess.Popen:
    """The job in its own process (and session), a driver on the test's local Ray; its output goes to ``log``."""
    env = {**os.environ, "RAY_ADDRESS": ray_address, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    with log.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-c", JOB, catalog_url, str(out), model_url],
            cwd=REPO,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def kill_when_mid_job(job: subprocess.Popen, out: Path, log: Path) -> float:
    """``kill -9`` the driver once OLD_OUTPUTS_AT_KILL outputs are over DURABLE_WITHIN_S + 1 s old; returns the
    kill time."""
    deadline = time.monotonic() + START_LIMIT_S
    while time.monotonic() < deadline:
        if job.poll() is not None:
            pytest.fail(
                f"the job ended (status {job.returncode}) before it could be killed:\n"
                f"{log.read_text(errors='replace')[-3000:]}"
            )
        outputs = visible_outputs(out) if out.is_dir() else {}
        if sum(time.time() - mtime > DURABLE_WITHIN_S + 1 for mtime, _ in outputs.values()) >= OLD_OUTPUTS_AT_KILL:
            os.kill(job.pid, signal.SIGKILL)
            killed_at = time.time()
            job.wait(timeout=30)
            with suppress(ProcessLookupError):  # anything the driver started in its own session
                os.killpg(job.pid, signal.SIGKILL)
            return killed_at
        time.sleep(0.05)
    job.kill()
    pytest.fail(f"no output within {START_LIMIT_S:.0f}s")


def test_given_a_driver_killed_with_sigkill_mid_job_when_re_run_then_records_were_durable_and_each_row_is_done_once(
    tmp_path, tiny_model_url, ray_local, paced_http
):
    rng = np.random.default_rng(21)
    catalog_url, out = str(tmp_path / "catalog.jsonl"), tmp_path / "out"
    rows = []
    for i in range(ROWS):
        row = write_case(str(tmp_path), f"r{i:02d}", rng, target=False)
        name = f"r{i:02d}.jpg"
        paced_http.files[name] = read_bytes(row["composite"])
        if i:
            paced_http.after[name] = out / f"r{i - 1:02d}.jpg"
        rows.append({**row, "composite": f"{paced_http.url}/{name}"})
    write_catalog(rows, catalog_url)
    catalog = read_catalog(catalog_url, output_prefix=str(out))

    log = tmp_path / "job.log"
    job = start_job(catalog_url, out, tiny_model_url, ray_local.get_runtime_context().gcs_address, log)
    killed_at = kill_when_mid_job(job, out, log)

    outputs = visible_outputs(out)
    persisted = load_previous(catalog.results_dir)
    old = {name for name, (mtime, _) in outputs.items() if mtime <= killed_at - DURABLE_WITHIN_S}
    ages = sorted(round(killed_at - mtime, 1) for mtime, _ in outputs.values())
    assert len(old) >= OLD_OUTPUTS_AT_KILL and len(outputs) < ROWS, f"not mid-job: outputs made {ages}s before the kill"
    assert read_results(catalog.results_dir) is None  # only fragments: the job never got to its merge
    for name in sorted(old):  # every output older than a few seconds has its record, naming its exact bytes
        record = persisted.get(name.removesuffix(".jpg"))
        data = outputs[name][1]
        assert record is not None, f"{name} was written {killed_at - outputs[name][0]:.1f}s before the kill, no record"
        assert (record["status"], record["output_sha256"], record["output_size"]) == ("ok", sha(data), len(data))
    assert all(f"{row_id}.jpg" in outputs for row_id in persisted)  # no record without its output

    paced_http.after.clear()  # the re-run needs no pacing
    again = run_catalog(catalog, BatchConfig(model_uri=tiny_model_url, concurrency=1))

    table = {r["id"]: r for r in read_results(catalog.results_dir).to_pylist()}
    assert sorted(table) == [f"r{i:02d}" for i in range(ROWS)]  # one record per row
    assert {i: table[i]["status"] for i in persisted} == dict.fromkeys(persisted, "skipped")  # not made twice
    assert all(table[i]["status"] == "ok" for i in table if i not in persisted)
    assert again.summary.error == 0 and list_fragments(catalog.results_dir) == []
    after = visible_outputs(out)
    assert sorted(after) == [f"r{i:02d}.jpg" for i in range(ROWS)]
    assert {f"{i}.jpg": after[f"{i}.jpg"][1] for i in persisted} == {f"{i}.jpg": outputs[f"{i}.jpg"][1] for i in persisted}
    for row_id, record in table.items():  # every output is whole: the bytes its record names
        data = after[f"{row_id}.jpg"][1]
        assert (record["output_sha256"], record["output_size"]) == (sha(data), len(data))
    assert all_files(out) == sorted([*after, "_results/results.parquet"])  # nothing partial or temporary


# ---------------------------------------------------------------- verified outputs (in-process)


def small_catalog(root: str, count: int, seed: int):
    rng = np.random.default_rng(seed)
    rows = [write_case(root, f"v{i}", rng, target=False) for i in range(count)]
    write_catalog(rows, f"{root}/catalog.csv")
    return read_catalog(f"{root}/catalog.csv", output_prefix=f"{root}/out")


def options(model_url: str) -> BatchConfig:
    return BatchConfig(model_uri=model_url, concurrency=1, progress_every_s=0.0)


@pytest.mark.usefixtures("ray_local")
def test_given_outputs_damaged_or_replaced_when_re_run_then_exactly_those_rows_are_made_again(tmp_path, tiny_model_url):
    catalog = small_catalog(str(tmp_path), 5, seed=31)
    first = {r["id"]: r for r in run_catalog(catalog, options(tiny_model_url)).records}
    made = {row_id: read_bytes(r["output"]) for row_id, r in first.items()}
    write_bytes_atomic(first["v0"]["output"], b"garbage")  # 7 bytes
    flipped = bytearray(made["v1"])
    flipped[len(flipped) // 2] ^= 0xFF  # same size, other bytes
    write_bytes_atomic(first["v1"]["output"], bytes(flipped))
    os.remove(first["v2"]["output"])
    write_bytes_atomic(first["v3"]["output"], made["v3"][:-100])  # cut short

    second = {r["id"]: r for r in run_catalog(catalog, options(tiny_model_url)).records}

    assert {i: r["status"] for i, r in first.items()} == dict.fromkeys(first, "ok")
    assert {i: r["status"] for i, r in second.items()} == {"v0": "ok", "v1": "ok", "v2": "ok", "v3": "ok", "v4": "skipped"}
    assert {i: read_bytes(r["output"]) for i, r in second.items()} == made  # made again, the same bytes
    assert all(r["output_sha256"] == sha(made[i]) and r["output_size"] == len(made[i]) for i, r in second.items())


@pytest.mark.usefixtures("ray_local")
def test_given_results_of_an_older_version_without_output_hashes_when_re_run_then_existing_outputs_are_kept_and_hashed(
    tmp_path, tiny_model_url
):
    catalog = small_catalog(str(tmp_path), 3, seed=32)
    first = {r["id"]: r for r in run_catalog(catalog, options(tiny_model_url)).records}
    url = results_url(catalog.results_dir)
    pq.write_table(pq.read_table(url).drop_columns(["output_sha256", "output_size"]), url)  # as written before
    os.remove(first["v2"]["output"])

    second = {r["id"]: r for r in run_catalog(catalog, options(tiny_model_url)).records}
    write_bytes_atomic(first["v0"]["output"], b"garbage")
    third = {r["id"]: r for r in run_catalog(catalog, options(tiny_model_url)).records}

    assert [second[i]["status"] for i in ("v0", "v1", "v2")] == ["skipped", "skipped", "ok"]  # existence only
    assert second["v0"]["output_sha256"] == first["v0"]["output_sha256"]  # hashed as found, verified from now on
    assert [third[i]["status"] for i in ("v0", "v1", "v2")] == ["ok", "skipped", "skipped"]
    assert read_bytes(first["v0"]["output"]) != b"garbage"
