"""The results table of a bulk harmonization job, kept next to its outputs, and the HTML report.

Layout under ``<output_prefix>/_results/``:

    results.parquet            one row per catalog id (the latest record), merged at the end of a run
    fragments/<run>-<n>.parquet records written while the job runs (each one atomically), so a job
                               killed halfway loses at most the last few seconds of records
    report.html                before / after / mask thumbnails (and ground truth), counts and metrics

A row is up to date, and skipped by the next run, when its latest record says it was made (status ok
or skipped) for the same output URL from inputs with the same content hashes, by the same model version
and JPEG quality, and its output now has the size and sha256 the record holds (``output_matches``): a
missing, cut or replaced output is made again. Records of older versions (no ``output_sha256``; their
tables and fragments still load) accept any non-empty output, and the skipped record then holds its
hash, so later runs verify it in full. Errors are always retried. Records are merged by id, the latest
winning, so a job killed halfway and re-run ends with exactly one record per row; outputs the killed
run made but never recorded are made again (atomically). Records are durable within ``max_seconds``
of reaching ``FragmentWriter`` (a timer flushes them), so ``kill -9`` loses only the last seconds'.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq

from ssh_model.storage import exists, filesystem, join, read_bytes, write_bytes_atomic

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.parquet"
REPORT_FILE = "report.html"
FRAGMENTS_DIR = "fragments"
STATUSES = ("ok", "skipped", "error")
METRICS_COLUMN = "metrics"  # JSON {"model_psnr": ..., "identity_psnr": ...} in records and fragments
REPORTED_METRICS = ("psnr", "mse", "fmse", "ssim")

BASE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("error", pa.string()),
        ("output", pa.string()),
        ("composite", pa.string()),
        ("mask", pa.string()),
        ("background", pa.string()),
        ("reference_mask", pa.string()),
        ("target", pa.string()),
        ("composite_sha256", pa.string()),
        ("mask_sha256", pa.string()),
        ("background_sha256", pa.string()),
        ("reference_mask_sha256", pa.string()),
        ("target_sha256", pa.string()),
        ("model_version", pa.string()),
        ("jpeg_quality", pa.int32()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("seconds", pa.float64()),
        ("finished_at", pa.timestamp("us", tz="UTC")),
        ("run_id", pa.string()),
        ("output_sha256", pa.string()),  # of the output's bytes as written (None in records of older versions)
        ("output_size", pa.int64()),
    ]
)
RECORD_SCHEMA = BASE_SCHEMA.append(pa.field(METRICS_COLUMN, pa.string()))
HASH_COLUMNS = ("composite_sha256", "mask_sha256", "background_sha256", "reference_mask_sha256", "target_sha256")


def results_url(results_dir: str) -> str:
    return join(results_dir, RESULTS_FILE)


def report_url(results_dir: str) -> str:
    return join(results_dir, REPORT_FILE)


def fragments_dir(results_dir: str) -> str:
    return join(results_dir, FRAGMENTS_DIR)


def new_record(**values: object) -> dict:
    """A record with every column of RECORD_SCHEMA (missing ones None, ``finished_at`` now)."""
    record = dict.fromkeys(RECORD_SCHEMA.names)
    record["finished_at"] = datetime.now(UTC)
    record.update(values)
    unknown = set(record) - set(RECORD_SCHEMA.names)
    if unknown:
        raise KeyError(f"unknown record fields {sorted(unknown)}")
    return record


def is_up_to_date(
    previous: dict | None, *, output: str, hashes: dict[str, str | None], model_version: str, jpeg_quality: int
) -> bool:
    """True when ``previous`` (a record) says ``output`` was made from these very inputs and model.

    The caller still has to check that the output object exists.
    """
    if previous is None or previous.get("status") not in ("ok", "skipped"):
        return False
    return (
        previous.get("output") == output
        and previous.get("model_version") == model_version
        and previous.get("jpeg_quality") == jpeg_quality
        and all(previous.get(k) == hashes.get(k) for k in HASH_COLUMNS)
    )


def output_matches(previous: dict, data: bytes) -> bool:
    """True when ``data``, the output's bytes as they are now, are what ``previous`` (a record) says was
    written: the same size and sha256. A record without a hash (written by an older version) accepts
    any output that is not empty."""
    if not previous.get("output_sha256"):
        return len(data) > 0
    return len(data) == previous.get("output_size") and hashlib.sha256(data).hexdigest() == previous["output_sha256"]


# ---------------------------------------------------------------- (de)serialisation


def _to_parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def records_table(records: list[dict]) -> pa.Table:
    """Records (with the JSON metrics column) as an Arrow table of RECORD_SCHEMA."""
    return pa.Table.from_pylist(records, schema=RECORD_SCHEMA)


def metric_columns(names: Iterable[str]) -> list[str]:
    """Metric column names in report order: the model's first, then each baseline's."""
    names = sorted(set(names))
    return [n for n in names if n.startswith("model_")] + [n for n in names if not n.startswith("model_")]


def flat_results_table(records: list[dict]) -> pa.Table:
    """Records as the published results table: base columns plus one float column per metric."""
    metrics = [json.loads(r[METRICS_COLUMN]) if r.get(METRICS_COLUMN) else {} for r in records]
    base = pa.Table.from_pylist([{k: r.get(k) for k in BASE_SCHEMA.names} for r in records], schema=BASE_SCHEMA)
    for name in metric_columns(k for m in metrics for k in m):
        base = base.append_column(pa.field(name, pa.float64()), pa.array([m.get(name) for m in metrics], type=pa.float64()))
    return base


def records_from_table(table: pa.Table) -> list[dict]:
    """Records back from either a fragment (JSON metrics) or a published table (flat metric columns)."""
    extra = [c for c in table.column_names if c not in RECORD_SCHEMA.names]
    records = []
    for row in table.to_pylist():
        record = new_record(**{k: row.get(k) for k in RECORD_SCHEMA.names})
        if extra:
            values = {c: row[c] for c in extra if row.get(c) is not None and not math.isnan(row[c])}
            record[METRICS_COLUMN] = json.dumps(values) if values else None
        records.append(record)
    return records


def read_results(results_dir: str) -> pa.Table | None:
    """The published results table, or None when there is none yet."""
    url = results_url(results_dir)
    if not exists(url):
        return None
    return pq.read_table(pa.BufferReader(read_bytes(url)))


def list_fragments(results_dir: str) -> list[str]:
    """URLs of the record fragments left by running or killed jobs, sorted."""
    fs, path = filesystem(fragments_dir(results_dir))
    fs.invalidate_cache(path)
    if not fs.exists(path):
        return []
    found = sorted(p for p in fs.ls(path, detail=False) if p.endswith(".parquet"))
    base = fragments_dir(results_dir)
    return [join(base, p.rsplit("/", 1)[-1]) for p in found]


def latest_by_id(records: Iterable[dict]) -> dict[str, dict]:
    """One record per id: the one finished last (ties: the later in ``records``)."""
    latest: dict[str, dict] = {}
    for record in records:
        known = latest.get(record["id"])
        if known is None or _stamp(record) >= _stamp(known):
            latest[record["id"]] = record
    return latest


def _stamp(record: dict) -> float:
    value = record.get("finished_at")
    return value.timestamp() if isinstance(value, datetime) else 0.0


def load_previous(results_dir: str) -> dict[str, dict]:
    """The latest record per id from the published table and any fragments (of finished or killed runs)."""
    records: list[dict] = []
    table = read_results(results_dir)
    if table is not None:
        records += records_from_table(table)
    for url in list_fragments(results_dir):
        records += records_from_table(pq.read_table(pa.BufferReader(read_bytes(url))))
    return latest_by_id(records)


# ---------------------------------------------------------------- writing


class FragmentWriter:
    """Buffers records and writes them as small Parquet fragments, each atomically.

    ``add`` flushes when ``max_rows`` records are pending or the oldest has waited ``max_seconds``;
    once ``start``-ed, a background thread also flushes them then when nothing else arrives, so a record
    is durable within about ``max_seconds`` of reaching the writer, whatever becomes of the process.

    Args:
        results_dir: the job's ``_results`` folder.
        run_id: names the fragments of this run.
        max_rows: flush when this many records are pending.
        max_seconds: flush when the oldest pending record has waited this long.
    """

    def __init__(self, results_dir: str, run_id: str, max_rows: int, max_seconds: float) -> None:
        self.results_dir = results_dir
        self.run_id = run_id
        self.max_rows = max_rows
        self.max_seconds = max_seconds
        self.pending: list[dict] = []
        self.written: list[str] = []
        self._since = time.monotonic()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None

    def add(self, records: Iterable[dict]) -> None:
        with self._lock:
            for record in records:
                if not self.pending:
                    self._since = time.monotonic()
                self.pending.append(record)
            if len(self.pending) >= self.max_rows or self._is_due():
                self.flush()

    def _is_due(self) -> bool:
        return bool(self.pending) and time.monotonic() - self._since >= self.max_seconds

    def flush(self) -> None:
        """Write the pending records as one fragment; on a storage error they stay pending."""
        with self._lock:
            if not self.pending:
                return
            url = join(fragments_dir(self.results_dir), f"{self.run_id}-{len(self.written):06d}.parquet")
            write_bytes_atomic(url, _to_parquet_bytes(records_table(self.pending)))
            self.written.append(url)
            self.pending = []

    def start(self) -> FragmentWriter:
        """Start the background thread that flushes records waiting ``max_seconds`` (idempotent)."""
        if self._timer is None:
            self._stop.clear()
            self._timer = threading.Thread(target=self._flush_when_due, name=f"fragments-{self.run_id}", daemon=True)
            self._timer.start()
        return self

    def close(self) -> None:
        """Stop the background thread and write whatever is pending."""
        if self._timer is not None:
            self._stop.set()
            self._timer.join()
            self._timer = None
        self.flush()

    def _flush_when_due(self) -> None:
        period = min(1.0, max(0.05, self.max_seconds / 4))
        while not self._stop.wait(period):
            with self._lock:
                if not self._is_due():
                    continue
                try:
                    self.flush()
                except Exception:  # noqa: BLE001 - the records stay pending: retried in max_seconds, or by close()
                    self._since = time.monotonic()
                    logger.warning("cannot write a records fragment under %s yet; retrying", self.results_dir, exc_info=True)


def merge_results(results_dir: str) -> tuple[str, pa.Table]:
    """Fold every fragment into ``results.parquet`` (latest record per id wins), then drop the fragments.

    Idempotent: if killed between the write and the clean-up, the next merge gives the same table.
    """
    fragments = list_fragments(results_dir)
    records: list[dict] = []
    previous = read_results(results_dir)
    if previous is not None:
        records += records_from_table(previous)
    for url in fragments:
        records += records_from_table(pq.read_table(pa.BufferReader(read_bytes(url))))
    merged = sorted(latest_by_id(records).values(), key=lambda r: r["id"])
    table = flat_results_table(merged)
    url = results_url(results_dir)
    write_bytes_atomic(url, _to_parquet_bytes(table))
    if fragments:
        fs, _ = filesystem(fragments[0])
        fs.rm([filesystem(u)[1] for u in fragments])
    return url, table


def new_run_id() -> str:
    """Sortable and unique: UTC time plus a random suffix."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
