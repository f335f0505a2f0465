"""The results table: up-to-date checks, incremental fragments, idempotent merges, summary and report."""

import hashlib
import json
import os
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.job_report import render_job_report, summarize
from pipeline.results import (
    FragmentWriter,
    is_up_to_date,
    list_fragments,
    load_previous,
    merge_results,
    new_record,
    output_matches,
    read_results,
)
from ssh_model.images import encode_image
from ssh_model.storage import read_bytes, write_bytes_atomic

HASHES = {"composite_sha256": "c1", "mask_sha256": "m1", "background_sha256": None, "target_sha256": "t1"}
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def record(row_id, status="ok", at=0, metrics=None, **extra):
    return new_record(
        id=row_id,
        status=status,
        output=f"memory://o/{row_id}.jpg",
        model_version="v1",
        jpeg_quality=95,
        finished_at=T0 + timedelta(seconds=at),
        metrics=json.dumps(metrics) if metrics else None,
        **HASHES,
        **extra,
    )


def test_given_a_record_when_inputs_model_or_quality_differ_then_not_up_to_date():
    previous = record("a")
    same = {"output": "memory://o/a.jpg", "hashes": HASHES, "model_version": "v1", "jpeg_quality": 95}

    assert is_up_to_date(previous, **same)
    assert is_up_to_date({**previous, "status": "skipped"}, **same)
    assert not is_up_to_date({**previous, "status": "error"}, **same)
    assert not is_up_to_date(None, **same)
    assert not is_up_to_date(previous, **{**same, "hashes": {**HASHES, "mask_sha256": "m2"}})
    assert not is_up_to_date(previous, **{**same, "model_version": "v2"})
    assert not is_up_to_date(previous, **{**same, "jpeg_quality": 90})
    assert not is_up_to_date(previous, **{**same, "output": "memory://o/elsewhere.jpg"})


def test_given_fragments_when_merged_then_latest_record_per_id_wins_and_fragments_are_gone(tmp_path):
    results_dir = str(tmp_path / "_results")
    first = FragmentWriter(results_dir, "run1", max_rows=2, max_seconds=2.0)
    first.add([record("a", "error", at=0, reason="missing", error="gone"), record("b", at=1)])  # flushed
    first.add([record("c", at=2)])
    first.flush()
    second = FragmentWriter(results_dir, "run2", max_rows=100, max_seconds=2.0)
    second.add([record("a", at=10, metrics={"model_psnr": 30.0, "identity_psnr": 25.0})])
    second.flush()
    assert len(list_fragments(results_dir)) == 3

    url, table = merge_results(results_dir)

    assert list_fragments(results_dir) == []
    rows = {r["id"]: r for r in pq.read_table(url).to_pylist()}
    assert sorted(rows) == ["a", "b", "c"]
    assert rows["a"]["status"] == "ok"
    assert (rows["a"]["model_psnr"], rows["a"]["identity_psnr"]) == (30.0, 25.0)
    assert rows["b"]["model_psnr"] is None
    assert table.column_names.index("model_psnr") < table.column_names.index("identity_psnr")


def test_given_a_published_table_and_new_fragments_when_merged_twice_then_idempotent(tmp_path):
    results_dir = str(tmp_path / "_results")
    writer = FragmentWriter(results_dir, "run1", max_rows=256, max_seconds=2.0)
    writer.add([record("a", metrics={"model_psnr": 31.5}), record("b")])
    writer.flush()
    merge_results(results_dir)
    pending = FragmentWriter(results_dir, "run2", max_rows=256, max_seconds=2.0)
    pending.add([record("b", "skipped", at=5)])  # below both thresholds: never written (a kill loses it)
    late = FragmentWriter(results_dir, "run3", max_rows=1, max_seconds=2.0)
    late.add([record("c", at=6)])

    previous = load_previous(results_dir)  # published table + pending fragments
    _, merged = merge_results(results_dir)
    _, again = merge_results(results_dir)

    assert sorted(previous) == ["a", "b", "c"]
    assert json.loads(previous["a"]["metrics"]) == {"model_psnr": 31.5}
    assert previous["b"]["status"] == "ok"
    assert merged.equals(again)
    assert read_results(results_dir).num_rows == 3


def test_given_a_slow_trickle_when_time_passes_then_the_writer_flushes_by_age(tmp_path):
    writer = FragmentWriter(str(tmp_path / "_results"), "run", max_rows=1000, max_seconds=0.0)

    writer.add([record("a")])
    writer.add([record("b")])

    assert len(writer.written) == 2 and writer.pending == []


def test_given_a_started_writer_when_no_further_record_arrives_then_a_timer_writes_them_within_max_seconds(tmp_path):
    results_dir = str(tmp_path / "_results")
    writer = FragmentWriter(results_dir, "run", max_rows=1000, max_seconds=0.3).start()
    try:
        added = time.monotonic()
        writer.add([record("a"), record("b")])  # below both thresholds: only the timer can write them
        while not list_fragments(results_dir) and time.monotonic() - added < 10:
            time.sleep(0.02)
        waited = time.monotonic() - added
        assert sorted(load_previous(results_dir)) == ["a", "b"] and writer.pending == []
        assert waited < 3.0
        writer.add([record("c")])
    finally:
        writer.close()  # stops the timer and writes what is left
    assert sorted(load_previous(results_dir)) == ["a", "b", "c"] and len(writer.written) == 2


def test_given_a_record_with_its_output_hash_when_checked_then_only_the_same_bytes_match():
    made = b"\xff\xd8 harmonized bytes"
    recorded = record("a", output_sha256=hashlib.sha256(made).hexdigest(), output_size=len(made))
    legacy = record("b")  # written before outputs were hashed

    assert output_matches(recorded, made)
    assert not output_matches(recorded, b"garbage")
    assert not output_matches(recorded, made[:-1])
    assert not output_matches(recorded, bytes([made[0] ^ 1]) + made[1:])  # same size, other bytes
    assert output_matches(legacy, b"garbage") and not output_matches(legacy, b"")


def test_given_records_when_summarized_then_counts_reasons_and_means_exclude_errors():
    records = [
        record("a", metrics={"model_psnr": 30.0}),
        record("b", "skipped", metrics={"model_psnr": 20.0}),
        record("c", "error", reason="missing", metrics={"model_psnr": 1.0}),
        record("d", "error", reason="missing"),
        record("e", "error", reason="empty_mask"),
    ]

    summary = summarize(records, total=5, seconds=2.0, model_version="v1")

    assert (summary.ok, summary.skipped, summary.error, summary.done) == (1, 1, 3, 5)
    assert summary.error_rate == 0.6 and summary.rows_per_s == 2.5
    assert summary.reasons == {"missing": 2, "empty_mask": 1}
    assert summary.mean_metrics == {"model_psnr": 25.0}


def test_given_thumbnails_and_errors_when_reported_then_html_shows_images_counts_and_reasons():
    rng = np.random.default_rng(3)
    thumbs = {
        "composite": encode_image(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8), "JPEG"),
        "mask": encode_image(np.full((24, 32, 3), 255, np.uint8), "JPEG"),
    }
    records = [
        record("shown", metrics={"model_psnr": 31.25}),
        record("bad", "error", reason="mask_size", error="mask 3x3 vs 4x4"),
    ]
    summary = summarize(records, total=2, seconds=1.0, model_version="v1")

    html = render_job_report("job", records, {"shown": thumbs}, summary, extra={"catalog": "memory://c.csv"})

    assert html.count("<img") == 2
    assert "31.250" in html and "mask_size: mask 3x3 vs 4x4" in html
    assert "memory://c.csv" in html and "50.0%" in html


# ---------------------------------------------------------------- resuming real runs (local Ray)


class Killed(Exception):
    """Stands for the job dying: raised from inside the driver loop, after some records were persisted."""


def _catalog(root, count, rng):
    from pipeline.catalog import read_catalog, write_catalog
    from tests.pipeline.batch_cases import write_case

    rows = [write_case(root, f"r{i}", rng, target=False) for i in range(count)]
    write_catalog(rows, f"{root}/catalog.jsonl")
    return rows, read_catalog(f"{root}/catalog.jsonl", output_prefix=f"{root}/out")


def _options(model_url, **changes):
    from pipeline.configs import BatchConfig

    return BatchConfig(model_uri=model_url, concurrency=1, progress_every_s=0.0, fragment_rows=1, **changes)


def _outputs(root):
    return sorted(n for n in os.listdir(f"{root}/out") if n != "_results")


@pytest.mark.usefixtures("ray_local")
def test_given_a_finished_run_when_re_run_then_only_changed_or_failed_rows_redone(tmp_path, tiny_model_url):
    from pipeline.batch_inference import run_catalog
    from tests.pipeline.batch_cases import encode, smooth_photo

    root = str(tmp_path)
    rng = np.random.default_rng(11)
    rows, catalog = _catalog(root, 4, rng)
    write_bytes_atomic(rows[2]["mask"], b"broken")
    first = run_catalog(catalog, _options(tiny_model_url))
    made = read_bytes(first.records[0]["output"])
    write_bytes_atomic(rows[1]["composite"], encode(smooth_photo(rng, 64, 80), "JPEG"))  # new content
    os.remove(first.records[3]["output"])  # output gone

    second = run_catalog(catalog, _options(tiny_model_url))
    third = run_catalog(catalog, _options(tiny_model_url, overwrite=True))

    assert [r["status"] for r in first.records] == ["ok", "ok", "error", "ok"]
    assert [r["status"] for r in second.records] == ["skipped", "ok", "error", "ok"]
    assert read_bytes(first.records[0]["output"]) == made  # skipped: not rewritten
    assert second.records[0]["composite_sha256"] == first.records[0]["composite_sha256"]
    assert second.records[1]["composite_sha256"] != first.records[1]["composite_sha256"]
    assert [r["status"] for r in third.records] == ["ok", "ok", "error", "ok"]
    table = read_results(catalog.results_dir)
    assert table.num_rows == 4 and table.column("status").to_pylist() == ["ok", "ok", "error", "ok"]


@pytest.mark.usefixtures("ray_local")
def test_given_a_job_killed_halfway_when_re_run_then_every_row_is_done_exactly_once(tmp_path, tiny_model_url):
    from pipeline.batch_inference import run_catalog

    root = str(tmp_path)
    rows, catalog = _catalog(root, 6, np.random.default_rng(12))
    arrived = []

    def die_after_two(records):
        arrived.extend(records)
        if len(arrived) >= 2:
            raise Killed

    with pytest.raises(Killed):
        run_catalog(catalog, _options(tiny_model_url), on_records=die_after_two)
    persisted = load_previous(catalog.results_dir)
    assert read_results(catalog.results_dir) is None and len(list_fragments(catalog.results_dir)) >= 1
    assert set(persisted) == {r["id"] for r in arrived}
    before = {row_id: read_bytes(rec["output"]) for row_id, rec in persisted.items()}

    again = run_catalog(catalog, _options(tiny_model_url, keep_records=2, report_thumbnails=1))

    table = read_results(catalog.results_dir).to_pylist()
    assert sorted(r["id"] for r in table) == [f"r{i}" for i in range(6)]  # one record per row
    statuses = {r["id"]: r["status"] for r in table}
    assert {i: statuses[i] for i in persisted} == dict.fromkeys(persisted, "skipped")  # not made twice
    assert all(statuses[i] == "ok" for i in statuses if i not in persisted)
    assert {i: read_bytes(persisted[i]["output"]) for i in persisted} == before
    assert _outputs(root) == sorted(f"r{i}.jpg" for i in range(6))  # no partial or temporary objects
    assert list_fragments(catalog.results_dir) == [] and again.summary.error == 0
    # big-catalog mode keeps only the rows the report shows: r0, made now or skipped (then its thumbnails
    # come from its inputs and the output already written)
    assert again.summary.done == 6 and [r["id"] for r in again.records] == ["r0"]
    assert set(again.thumbnails["r0"]) == {"composite", "mask", "harmonized"}  # the catalog has no targets


@pytest.mark.usefixtures("ray_local")
def test_given_a_cut_out_row_when_re_run_then_its_skipped_thumbnails_show_the_alpha_as_the_mask(tmp_path, tiny_model_url):
    from pipeline.batch_inference import run_catalog
    from pipeline.catalog import read_catalog, write_catalog
    from tests.pipeline.batch_cases import write_case

    # given a finished run of an RGBA composite whose alpha is the mask (no mask file)
    root = str(tmp_path)
    write_catalog([write_case(root, "cutout", np.random.default_rng(13), target=False, rgba=True)], f"{root}/c.csv")
    catalog = read_catalog(f"{root}/c.csv", output_prefix=f"{root}/out")
    first = run_catalog(catalog, _options(tiny_model_url))
    # when it runs again, the row is skipped and its report thumbnails are rebuilt from what is there
    again = run_catalog(catalog, _options(tiny_model_url))

    assert [r["status"] for r in first.records] == ["ok"] and [r["status"] for r in again.records] == ["skipped"]
    assert set(again.thumbnails["cutout"]) == {"composite", "mask", "harmonized"}
    assert again.thumbnails["cutout"]["mask"] == first.thumbnails["cutout"]["mask"]
