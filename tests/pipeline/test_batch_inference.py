"""The Ray Data job on real local Ray: full-resolution outputs in the input's format, bad rows fail alone."""

import hashlib
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.batch_inference import run_catalog
from pipeline.catalog import read_catalog, write_catalog
from pipeline.configs import BatchConfig
from ssh_model.baselines import BASELINES
from ssh_model.images import decode_image, decode_mask
from ssh_model.metrics import evaluate
from ssh_model.storage import read_bytes, write_bytes_atomic
from tests.pipeline.batch_cases import write_case

MAX_PIXELS = 10_000  # the 64x80 test images pass, the 160x160 one does not


def sha(path: str) -> str:
    return hashlib.sha256(read_bytes(path)).hexdigest()


@pytest.fixture(scope="module")
def job(tmp_path_factory, tiny_model_url, ray_local):
    """One run over good and bad rows with two actors; returns what the tests inspect."""
    root = str(tmp_path_factory.mktemp("batch"))
    rng = np.random.default_rng(5)
    rows = [
        write_case(root, "good-a", rng),
        write_case(root, "good-b", rng, size=(72, 56)),
        write_case(root, "good-png", rng, fmt="PNG"),
        write_case(root, "with-bg", rng, background=True),
        write_case(root, "no-target", rng, target=False),
        write_case(root, "corrupt", rng),
        write_case(root, "truncated", rng),
        {**write_case(root, "missing", rng), "composite": f"{root}/in/does-not-exist.jpg"},
        write_case(root, "mask-size", rng, mask_size=(32, 40)),
        write_case(root, "empty-mask", rng, empty_mask=True),
        write_case(root, "too-large", rng, size=(160, 160)),
    ]
    write_bytes_atomic(rows[5]["composite"], b"this is not a JPEG at all")
    jpeg = read_bytes(rows[6]["composite"])
    write_bytes_atomic(rows[6]["composite"], jpeg[: len(jpeg) // 2])
    catalog_url = f"{root}/catalog.csv"
    write_catalog(rows, catalog_url)
    inputs = [
        row[k] for row in rows for k in ("composite", "mask", "target", "background") if k in row and os.path.exists(row[k])
    ]
    hashes_before = {path: sha(path) for path in inputs}
    catalog = read_catalog(catalog_url, output_prefix=f"{root}/out")

    outcome = run_catalog(
        catalog,
        BatchConfig(
            model_uri=tiny_model_url,
            concurrency=2,
            max_pixels=MAX_PIXELS,
            jpeg_quality=90,
            progress_every_s=0.0,
            fragment_rows=2,
        ),
    )

    return {
        "root": root,
        "rows": {r["id"]: r for r in rows},
        "catalog": catalog,
        "outcome": outcome,
        "records": {r["id"]: r for r in outcome.records},
        "inputs": hashes_before,
    }


GOOD = ["good-a", "good-b", "good-png", "with-bg", "no-target"]
BAD = {
    "corrupt": "unreadable",
    "truncated": "truncated",
    "missing": "missing",
    "mask-size": "mask_size",
    "empty-mask": "empty_mask",
    "too-large": "too_large",
}


def test_given_good_and_bad_rows_when_run_then_each_bad_row_fails_alone_with_its_reason(job):
    records = job["records"]

    assert {k: r["status"] for k, r in records.items() if k in GOOD} == dict.fromkeys(GOOD, "ok")
    assert {k: records[k]["reason"] for k in BAD} == BAD
    assert all(records[k]["status"] == "error" and records[k]["error"] for k in BAD)
    assert "does-not-exist.jpg" in records["missing"]["error"]
    assert "32" in records["mask-size"]["error"] or "40" in records["mask-size"]["error"]
    summary = job["outcome"].summary
    assert (summary.ok, summary.error, summary.total) == (5, 6, 11)


def test_given_a_run_then_outputs_are_full_resolution_in_the_input_format_and_errors_write_nothing(job):
    for row_id in GOOD:
        row, record = job["rows"][row_id], job["records"][row_id]
        data = read_bytes(record["output"])
        composite = decode_image(read_bytes(row["composite"]))
        assert decode_image(data).shape == composite.shape
        assert (record["width"], record["height"]) == (composite.shape[1], composite.shape[0])
        expected_magic = b"\x89PNG" if row_id == "good-png" else b"\xff\xd8"
        assert data.startswith(expected_magic), row_id
        assert record["output"].endswith(".png" if row_id == "good-png" else ".jpg")
    for row_id in BAD:
        assert not os.path.exists(job["records"][row_id]["output"])
    leftovers = [n for n in os.listdir(f"{job['root']}/out") if n.endswith(".tmp") or n.startswith(".")]
    assert leftovers == []


def test_given_a_run_then_inputs_are_untouched(job):
    assert {path: sha(path) for path in job["inputs"]} == job["inputs"]


def test_given_targets_then_metrics_are_recorded_for_the_model_and_every_baseline(job):
    results = {r["id"]: r for r in pq.read_table(f"{job['root']}/out/_results/results.parquet").to_pylist()}
    row = job["rows"]["good-a"]
    composite = decode_image(read_bytes(row["composite"]))
    target = decode_image(read_bytes(row["target"]))
    mask = decode_mask(read_bytes(row["mask"]))
    expected_identity = evaluate(BASELINES["identity"](composite, mask, None), target, mask)

    assert sorted(results) == sorted(job["rows"])
    for name in ["model", *BASELINES]:
        assert np.isfinite(results["good-a"][f"{name}_psnr"]), name
    assert results["good-a"]["identity_psnr"] == pytest.approx(expected_identity["psnr"])
    assert results["no-target"]["model_psnr"] is None
    assert results["good-a"]["composite_sha256"] == sha(row["composite"])
    assert results["good-a"]["model_version"] == job["outcome"].summary.model_version != ""
    assert all(r["seconds"] > 0 for r in results.values())


def test_given_a_run_then_report_thumbnails_exist_for_the_first_good_rows(job):
    thumbs = job["outcome"].thumbnails

    assert set(thumbs) == set(GOOD)
    assert set(thumbs["good-a"]) == {"composite", "mask", "harmonized", "target"}
    assert "target" not in thumbs["no-target"]
    assert max(decode_image(thumbs["good-a"]["harmonized"]).shape[:2]) <= 224
