"""A row fails alone, always: one real batch run (local Ray, a loopback HTTP server, the local S3) over good rows and
one bad row of each kind; good rows are done and recorded, each bad row has its reason, nothing lands outside the
prefix, which is the default one (``{data_root}/harmonized/{catalog stem}``)."""

import hashlib
import importlib.util
import os
import uuid

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.batch_inference import run_catalog
from pipeline.catalog import read_catalog, write_catalog
from pipeline.configs import BatchConfig
from ssh_model.storage import exists, write_bytes_atomic
from tests.pipeline.batch_cases import encode, write_case
from tests.ssh_model.test_images import png_with_header_size

MAX_PIXELS = 10_000  # the 64x80 test images pass, the 160x160 one does not
PILLOW_BOMB_LIMIT = "178956970"  # Pillow's own limit, which must never be the one quoted
FETCH_TIMEOUT_S = 3.0
GOOD = ["good-derived", "good-relative", "good-absolute", "good-bg", "good-rgba", "good-reference"]


def tree_hashes(root: str, skip: str) -> dict[str, str]:
    """sha256 of every file under ``root`` except those under ``skip``."""
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            if not path.startswith(skip + os.sep):
                with open(path, "rb") as handle:
                    found[path] = hashlib.sha256(handle.read()).hexdigest()
    return found


def bad_rows(root: str, http: str, other_bucket_url: str, rng: np.random.Generator) -> dict[str, tuple[dict, str]]:
    """Catalog rows that each fail one way, with the reason each must get."""
    cases = {
        "scheme": ({"composite": "foo://bucket/a.jpg"}, "unsupported_url"),
        "refused": ({"composite": "http://127.0.0.1:1/a.jpg"}, "unreachable"),
        "forbidden": ({"composite": f"{http}/forbidden/a.jpg"}, "forbidden"),
        "gone-local": ({"mask": f"{root}/in/no-such-mask.png"}, "missing"),
        "gone-http": ({"composite": f"{http}/gone/a.jpg"}, "missing"),
        "server-error": ({"background": f"{http}/server-error/bg.jpg"}, "io"),
        "stalled": ({"composite": f"{http}/stall/a.jpg"}, "timeout"),
        "climb": ({"output": "../../escape.jpg"}, "unsafe_output"),
        "dotfile": ({"output": f"{root}/home/.bashrc"}, "unsafe_output"),
        "elsewhere": ({"output": f"{root}/elsewhere/x.jpg"}, "unsafe_output"),
        "bucket": ({"output": other_bucket_url}, "unsafe_output"),
        "no-extension": ({"output": "notes"}, "unsafe_output"),
        "reserved": ({"output": "_results/x.png"}, "unsafe_output"),
    }
    if importlib.util.find_spec("gcsfs") is None:  # a scheme fsspec knows, with its backend not installed
        cases["backend"] = ({"composite": "gs://bucket/a.jpg"}, "unsupported_url")
    rows = {name: ({**write_case(root, name, rng), **change}, reason) for name, (change, reason) in cases.items()}
    rows["corrupt"] = (write_case(root, "corrupt", rng), "unreadable")
    write_bytes_atomic(rows["corrupt"][0]["composite"], b"this is not a JPEG at all")
    rows["bomb"] = (write_case(root, "bomb", rng, fmt="PNG"), "too_large")
    write_bytes_atomic(rows["bomb"][0]["composite"], png_with_header_size(20000, 20000))
    rows["big"] = (write_case(root, "big", rng, size=(160, 160)), "too_large")
    rows["mask-size"] = (write_case(root, "mask-size", rng, mask_size=(32, 40)), "mask_size")
    rows["empty-mask"] = (write_case(root, "empty-mask", rng, empty_mask=True), "empty_mask")
    rows["full-mask"] = (write_case(root, "full-mask", rng), "full_mask")
    write_bytes_atomic(rows["full-mask"][0]["mask"], encode(np.full((64, 80), 255, np.uint8), "PNG"))
    rows["target-size"] = (write_case(root, "target-size", rng), "target_size")
    write_bytes_atomic(rows["target-size"][0]["target"], encode(np.zeros((32, 40, 3), np.uint8), "PNG"))
    rows["no-mask"] = ({**write_case(root, "no-mask", rng), "mask": ""}, "no_mask")  # a JPEG has no alpha
    rows["empty-reference"] = (write_case(root, "empty-reference", rng, reference_mask="empty"), "empty_reference")
    rows["reference-size"] = (write_case(root, "reference-size", rng, reference_mask="small"), "mask_size")
    return rows


@pytest.fixture(scope="module")
def job(tmp_path_factory, tiny_model_url, ray_local, s3_bucket, failing_http_server):
    root = str(tmp_path_factory.mktemp("row-errors"))
    rng = np.random.default_rng(15)
    prefix = f"{root}/data/harmonized/rows"
    other_bucket_url = f"s3://{s3_bucket}/other-{uuid.uuid4().hex[:8]}/x.jpg"
    good = [
        write_case(root, "good-derived", rng),
        {**write_case(root, "good-relative", rng), "output": "sub/r.png"},
        {**write_case(root, "good-absolute", rng), "output": f"{prefix}/abs.jpg"},
        write_case(root, "good-bg", rng, background=True),
        write_case(root, "good-rgba", rng, rgba=True),
        write_case(root, "good-reference", rng, reference_mask="left"),
    ]
    bad = bad_rows(root, failing_http_server.url, other_bucket_url, rng)
    write_bytes_atomic(f"{root}/home/.bashrc", b"export PATH=$PATH\n")
    catalog_url = f"{root}/rows.jsonl"
    write_catalog(good + [row for row, _ in bad.values()], catalog_url)
    before = tree_hashes(root, skip=prefix)

    with pytest.MonkeyPatch.context() as env:
        env.setenv("SSH_DATA_ROOT", f"{root}/data")  # the driver places outputs; no output_prefix is given
        catalog = read_catalog(catalog_url)
        outcome = run_catalog(
            catalog,
            BatchConfig(
                model_uri=tiny_model_url,
                concurrency=1,
                max_pixels=MAX_PIXELS,
                fetch_timeout_s=FETCH_TIMEOUT_S,
                progress_every_s=0.0,
            ),
        )

    return {
        "root": root,
        "prefix": prefix,
        "catalog": catalog,
        "outcome": outcome,
        "before": before,
        "after": tree_hashes(root, skip=prefix),
        "expected": {k: reason for k, (_, reason) in bad.items()},
        "records": {r["id"]: r for r in outcome.records},
        "other_bucket_url": other_bucket_url,
    }


def test_given_one_bad_row_of_each_kind_when_run_then_good_rows_are_ok_and_each_bad_row_has_its_reason(job):
    records = job["records"]

    assert {k: records[k]["status"] for k in GOOD} == dict.fromkeys(GOOD, "ok")
    assert {k: records[k]["reason"] for k in job["expected"]} == job["expected"]
    assert all(records[k]["status"] == "error" and records[k]["error"] for k in job["expected"])
    summary = job["outcome"].summary
    assert (summary.ok, summary.error) == (len(GOOD), len(job["expected"]))


def test_given_a_run_then_every_row_is_recorded_in_the_results_table_under_the_default_prefix(job):
    prefix = job["prefix"]
    results = {r["id"]: r for r in pq.read_table(f"{prefix}/_results/results.parquet").to_pylist()}

    assert job["catalog"].output_prefix == prefix
    assert set(results) == set(GOOD) | set(job["expected"])
    assert {k: results[k]["status"] for k in GOOD} == dict.fromkeys(GOOD, "ok")
    assert {k: results[k]["reason"] for k in job["expected"]} == job["expected"]
    assert sorted(os.listdir(prefix)) == [
        "_results",
        "abs.jpg",
        "good-bg.jpg",
        "good-derived.jpg",
        "good-reference.jpg",
        "good-rgba.png",
        "sub",
    ]
    assert os.listdir(f"{prefix}/sub") == ["r.png"]


def test_given_unsafe_outputs_then_nothing_outside_the_prefix_was_created_or_replaced(job):
    assert job["after"] == job["before"]  # inputs, the catalog and the planted .bashrc included
    assert not os.path.exists(f"{job['root']}/elsewhere")
    assert not os.path.exists(os.path.normpath(f"{job['prefix']}/../../escape.jpg"))
    assert job["records"]["climb"]["output"] == f"{job['prefix']}/../../escape.jpg"
    assert not exists(job["other_bucket_url"])


def test_given_bad_rows_then_messages_name_the_item_and_quote_the_project_limit(job):
    errors = {k: r["error"] for k, r in job["records"].items()}

    assert "/forbidden/a.jpg" in errors["forbidden"]
    assert "127.0.0.1:1" in errors["refused"] and "no such file" not in errors["refused"]
    assert f"over the limit of {MAX_PIXELS}" in errors["bomb"] and PILLOW_BOMB_LIMIT not in errors["bomb"]
    assert f"over {FETCH_TIMEOUT_S:g}s" in errors["stalled"]
    assert "foo://bucket/a.jpg" in errors["scheme"]
    assert "contains '..'" in errors["climb"] and "has no image extension" in errors["no-extension"]
    assert "reserved results folder" in errors["reserved"]
    assert "no-mask.jpg has no transparency" in errors["no-mask"]
    assert "empty-reference-reference.png is empty" in errors["empty-reference"]
    assert "reference-size-reference.png is 40x32" in errors["reference-size"]
