"""The rows of bulk harmonization as Ray Data sees them (schemas), and stage 1: fetching their inputs.
The driver is ``pipeline.batch_inference``; stage 2, the model actors, is ``pipeline.batch_actor``.

- ``fetch_inputs``: light Ray tasks (no torch, no model) that download a batch's inputs in parallel,
  hash them, and mark the rows whose output is already up to date as skipped: their record matches
  and the output's bytes still have the recorded size and sha256 (and rows that cannot go on as
  errors: a refused output, an input that cannot be fetched, a fetch over the deadline).

Neither stage raises for a problem with one row: every such problem is a
``ssh_model.errors.HarmonizeInputError`` (raised where it is found) that becomes the row's error
record with its ``reason``, so good rows are always done and recorded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FetchTimeout

import pyarrow as pa

from pipeline.results import HASH_COLUMNS, METRICS_COLUMN, RECORD_SCHEMA, is_up_to_date, output_matches
from ssh_model.errors import HarmonizeInputError, redact, storage_error
from ssh_model.storage import read_bytes

logger = logging.getLogger(__name__)

INPUTS = ("composite", "mask", "background", "reference_mask", "target")
THUMBS = ("composite", "mask", "harmonized", "target")

PLAN_SCHEMA = pa.schema(
    [
        ("index", pa.int64()),
        ("id", pa.string()),
        ("output", pa.string()),
        ("output_refused", pa.string()),
        *[(name, pa.string()) for name in INPUTS],
        ("thumbs", pa.bool_()),
        ("previous", pa.string()),
    ]
)
FETCHED_SCHEMA = PLAN_SCHEMA.append(pa.field("fetch_seconds", pa.float64()))
for _name in INPUTS:
    FETCHED_SCHEMA = FETCHED_SCHEMA.append(pa.field(f"{_name}_bytes", pa.large_binary()))
for _name in HASH_COLUMNS:
    FETCHED_SCHEMA = FETCHED_SCHEMA.append(pa.field(_name, pa.string()))
for _name in ("pre_status", "pre_reason", "pre_error"):
    FETCHED_SCHEMA = FETCHED_SCHEMA.append(pa.field(_name, pa.string()))
OUTPUT_CHECK = ("output_sha256", "output_size")  # of a skipped row's output, as verified by the fetch stage
FETCHED_SCHEMA = FETCHED_SCHEMA.append(pa.field("output_sha256", pa.string())).append(pa.field("output_size", pa.int64()))
OUTPUT_SCHEMA = RECORD_SCHEMA.append(pa.field("index", pa.int64()))
for _name in THUMBS:
    OUTPUT_SCHEMA = OUTPUT_SCHEMA.append(pa.field(f"thumb_{_name}", pa.binary()))
PREVIOUS_KEYS = (
    "status",
    "output",
    "model_version",
    "jpeg_quality",
    "width",
    "height",
    METRICS_COLUMN,
    *HASH_COLUMNS,
    *OUTPUT_CHECK,
)


# ---------------------------------------------------------------- stage 1: fetch


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _unfetched(row: dict) -> dict:
    """A fetched row with no bytes, no hashes and no verdict yet."""
    return {
        **row,
        **{f"{n}_bytes": b"" for n in INPUTS},
        **dict.fromkeys(HASH_COLUMNS),
        **dict.fromkeys(OUTPUT_CHECK),
        "pre_status": None,
        "pre_reason": None,
        "pre_error": None,
        "fetch_seconds": 0.0,
    }


def _failed(out: dict, reason: str, message: str) -> dict:
    """``out`` as an error row (its downloaded bytes dropped)."""
    return {**out, **{f"{n}_bytes": b"" for n in INPUTS}, "pre_status": "error", "pre_reason": reason, "pre_error": message}


def _is_output_up_to_date(row: dict, out: dict, model_version: str, jpeg_quality: int) -> bool:
    """The previous record matches, and the output's bytes are still the ones it recorded (then their
    sha256 and size go in ``out``); a missing, changed or unreadable output is made again."""
    previous = json.loads(row["previous"])
    hashes = {k: out[k] for k in HASH_COLUMNS}
    if not is_up_to_date(
        previous, output=row["output"], hashes=hashes, model_version=model_version, jpeg_quality=jpeg_quality
    ):
        return False
    try:
        data = read_bytes(row["output"])
    except Exception as err:  # noqa: BLE001 - an output that cannot be checked is made again
        logger.info("row %s: making its output again (%s)", row["id"], storage_error(err, row["output"], "output"))
        return False
    if not output_matches(previous, data):
        logger.warning(
            "row %s: output %s is not what its record says (%d bytes, recorded %s); making it again",
            row["id"],
            redact(row["output"]),
            len(data),
            previous.get("output_size"),
        )
        return False
    out.update(output_sha256=sha256_hex(data), output_size=len(data))
    return True


def _fetch_row(row: dict, model_version: str, jpeg_quality: int, overwrite: bool) -> dict:
    """Download and hash one row's inputs; never raises: a problem is the row's error (``pre_status``)."""
    started = time.perf_counter()
    out = _unfetched(row)
    if row["output_refused"]:  # nothing is read for a row whose output may not be written
        return _failed(out, "unsafe_output", row["output_refused"])
    try:
        for name in INPUTS:
            url = row[name]
            if not url:
                continue
            try:
                data = read_bytes(url)
            except Exception as err:  # noqa: BLE001 - fsspec, botocore and aiohttp raise more than OSError
                raise storage_error(err, url, name) from err
            out[f"{name}_bytes"] = data
            out[f"{name}_sha256"] = sha256_hex(data)
        if not overwrite and row["previous"] and _is_output_up_to_date(row, out, model_version, jpeg_quality):
            out["pre_status"] = "skipped"
            if not row["thumbs"]:  # rows shown in the report keep their bytes for the thumbnails
                out.update({f"{n}_bytes": b"" for n in INPUTS})
    except HarmonizeInputError as err:
        out = _failed(out, err.reason, str(err))
    except Exception as err:  # noqa: BLE001 - a bug must still fail only its row, with its traceback logged
        logger.exception("fetching row %s failed unexpectedly", row["id"])
        out = _failed(out, "internal", f"{type(err).__name__}: {err}")
    out["fetch_seconds"] = time.perf_counter() - started
    return out


def _timed_out(row: dict, timeout_s: float) -> dict:
    message = f"row {row['id']}: fetching its inputs ({redact(row['composite'])}, ...) took over {timeout_s:g}s"
    return {**_failed(_unfetched(row), "timeout", message), "fetch_seconds": timeout_s}


def fetch_inputs(
    batch: pa.Table, model_version: str, jpeg_quality: int, overwrite: bool, threads: int, timeout_s: float | None
) -> pa.Table:
    """Download every input of the batch in parallel, hash them, and mark rows that are up to date.

    Args:
        timeout_s: a row whose inputs are not fetched within this many seconds (per round of
            ``threads`` rows) is the row's ``timeout`` error; its download is abandoned.
    """
    rows = batch.to_pylist()
    workers = max(1, min(threads, len(rows)))
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        futures = [pool.submit(_fetch_row, row, model_version, jpeg_quality, overwrite) for row in rows]
        deadline = None if timeout_s is None else time.monotonic() + timeout_s * math.ceil(len(rows) / workers)
        fetched = []
        for row, future in zip(rows, futures, strict=True):
            try:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                fetched.append(future.result(timeout=left))
            except FetchTimeout:
                fetched.append(_timed_out(row, timeout_s))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # a hung download must not hold the batch
    return pa.Table.from_pylist(fetched, schema=FETCHED_SCHEMA)
