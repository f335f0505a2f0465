import hashlib
import io
import os
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.ingest import (
    MANIFEST_SCHEMA,
    REJECTS_SCHEMA,
    expand_sources,
    images_url,
    ingest_one,
    ingest_photos,
    photo_urls,
    read_table,
    split_of,
)
from ssh_model import storage
from ssh_model.samples import sample_photo_paths
from tests.pipeline.photo_cases import fault_files, good_files, smooth_photo, write_files


def run_ingest(sources: list[str], data_root: str, max_workers: int = 4):
    urls, empty = expand_sources(sources)
    return ingest_photos(urls, data_root, empty, max_workers=max_workers, sources=sources)


def test_split_is_a_fixed_function_of_the_hash_with_about_90_5_5_percent():
    ids = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(4000)]
    counts = Counter(split_of(i) for i in ids)
    assert 0.87 < counts["train"] / 4000 < 0.93 and 0.03 < counts["val"] / 4000 < 0.07
    assert [split_of(i) for i in ids[:50]] == [split_of(i) for i in ids[:50]]
    assert split_of("00000000" + "f" * 56) == "train" and split_of(f"{95:08x}" + "0" * 56) == "test"


def test_sources_expand_folders_globs_and_the_bundled_samples(tmp_path):
    write_files(str(tmp_path / "a"), good_files(np.random.default_rng(0), 3))
    write_files(str(tmp_path / "a" / "deep"), {"x.JPG": b"1", ".hidden.jpg": b"2", "readme.txt": b"3"})
    urls, rejects = expand_sources(
        [
            str(tmp_path / "a"),
            str(tmp_path / "a" / "*.png"),
            "builtin://samples",
            str(tmp_path / "missing.jpg"),
            str(tmp_path / "none-*.jpg"),
        ]
    )
    names = [os.path.basename(u) for u in urls]
    # the folder's images (recursive, sorted), then the glob's (already listed: not repeated), ...
    assert names[:4] == ["x.JPG", "photo-000.jpg", "photo-001.png", "photo-002.webp"]
    assert names.count("photo-001.png") == 1 and "readme.txt" not in names and ".hidden.jpg" not in names
    assert [u for u in urls if u.startswith("builtin://")] == [
        f"builtin://samples/{os.path.basename(p)}" for p in sample_photo_paths()
    ]
    assert urls[-1] == str(tmp_path / "missing.jpg")
    assert rejects == [{"url": str(tmp_path / "none-*.jpg"), "reason": "missing", "detail": "the source matched no files"}]


def test_given_each_kind_of_bad_file_when_ingested_then_it_is_rejected_with_its_reason(tmp_path):
    faults = fault_files(np.random.default_rng(1))
    write_files(str(tmp_path / "in"), {name: data for name, (data, _) in faults.items()})
    for name, (_, reason) in faults.items():
        outcome = ingest_one(str(tmp_path / "in" / name), str(tmp_path / "root"), 80_000_000, 128)
        assert (name, outcome.row, outcome.reason) == (name, None, reason), outcome.detail
        assert outcome.detail
    missing = ingest_one(str(tmp_path / "in" / "gone.jpg"), str(tmp_path / "root"), 80_000_000, 128)
    assert missing.reason == "missing"
    assert not (tmp_path / "root").exists()  # nothing copied for rejects


def test_given_photos_and_faults_when_ingested_then_manifest_rejects_and_blobs_are_written(tmp_path):
    rng = np.random.default_rng(2)
    good = good_files(rng, 4)
    source = str(tmp_path / "src")
    write_files(source, good | {name: data for name, (data, _) in fault_files(rng).items()})
    write_files(str(tmp_path / "copy"), {"same.jpg": good["photo-000.jpg"]})  # a duplicate by content
    root = str(tmp_path / "data")
    summary = run_ingest([source, str(tmp_path / "copy"), str(tmp_path / "src" / "gone.png")], root)

    manifest = pq.read_table(images_url(root, "manifest.parquet"))
    assert manifest.schema.equals(MANIFEST_SCHEMA, check_metadata=False)
    assert manifest.num_rows == summary.images == summary.added == 4
    rows = {os.path.basename(r["source_url"]): r for r in manifest.to_pylist()}
    assert set(rows) == set(good)
    for name, data in good.items():
        row = rows[name]
        assert row["id"] == hashlib.sha256(data).hexdigest() and row["bytes"] == len(data)
        assert (row["width"], row["height"], row["split"]) == (160, 136, split_of(row["id"]))
        assert row["format"] == {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}[name.rsplit(".", 1)[1]]
        assert storage.read_bytes(images_url(root, row["blob"])) == data
    rejects_table = pq.read_table(images_url(root, "rejects.parquet"))
    rejects = {os.path.basename(r["url"]): r for r in rejects_table.to_pylist()}
    expected = {name: reason for name, (_, reason) in fault_files(np.random.default_rng(2)).items()}
    assert {name: r["reason"] for name, r in rejects.items() if name in expected} == expected
    assert rejects["gone.png"]["reason"] == "missing"
    assert rejects["same.jpg"]["reason"] == "duplicate"
    assert rows["photo-000.jpg"]["id"] in rejects["same.jpg"]["detail"]
    assert summary.reasons["not_rgb"] == 2 and summary.rejected == len(expected) + 2


def test_given_a_rerun_then_nothing_changes_and_a_grown_source_adds_only_new_photos(tmp_path):
    rng = np.random.default_rng(3)
    source, root = str(tmp_path / "src"), str(tmp_path / "data")
    write_files(source, good_files(rng, 3) | {"empty.jpg": b""})
    run_ingest([source], root)
    manifest_path, rejects_path = images_url(root, "manifest.parquet"), images_url(root, "rejects.parquet")
    before = {p: (storage.read_bytes(p), os.stat(p).st_mtime_ns) for p in (manifest_path, rejects_path)}

    again = run_ingest([source], root)
    assert (again.added, again.skipped_known) == (0, 3)
    assert not again.manifest_written and not again.rejects_written
    assert {p: (storage.read_bytes(p), os.stat(p).st_mtime_ns) for p in before} == before

    write_files(source, good_files(rng, 2, start=3))
    grown = run_ingest([source], root)
    manifest = read_table(manifest_path, MANIFEST_SCHEMA).to_pylist()
    assert (grown.added, grown.skipped_known, len(manifest)) == (2, 3, 5)
    old = {r["id"]: r for r in pq.read_table(manifest_path).to_pylist()}
    assert all(old[r["id"]] == r for r in manifest)
    assert read_table(rejects_path, REJECTS_SCHEMA).column("reason").to_pylist() == ["empty"]


def test_given_a_rejected_file_that_is_fixed_then_the_next_run_ingests_it_and_drops_the_reject(tmp_path):
    rng = np.random.default_rng(4)
    source, root = str(tmp_path / "src"), str(tmp_path / "data")
    write_files(source, {"late.jpg": b""})
    assert run_ingest([source], root).reasons == {"empty": 1}
    write_files(source, {"late.jpg": good_files(rng, 1)["photo-000.jpg"]})
    fixed = run_ingest([source], root)
    assert (fixed.added, fixed.rejected, fixed.reasons) == (1, 0, {})


def test_given_a_multi_picture_jpeg_from_a_camera_then_it_is_ingested_as_a_jpeg(tmp_path):
    photo = smooth_photo(np.random.default_rng(6))
    buffer = io.BytesIO()
    second = Image.fromarray(np.ascontiguousarray(photo[::-1]))
    Image.fromarray(photo).save(buffer, format="MPO", save_all=True, append_images=[second])
    write_files(str(tmp_path / "src"), {"camera.jpg": buffer.getvalue()})
    outcome = ingest_one(str(tmp_path / "src" / "camera.jpg"), str(tmp_path / "data"), 80_000_000, 128)
    assert (outcome.row["format"], outcome.row["blob"][-4:]) == ("JPEG", ".jpg")


@pytest.mark.parametrize("max_workers", [1, 3])
def test_given_s3_sources_and_data_root_when_ingested_then_tables_and_blobs_land_on_s3(s3_prefix, max_workers):
    rng = np.random.default_rng(5)
    source, root = f"{s3_prefix}/photos", f"{s3_prefix}/data"
    write_files(source, good_files(rng, 3) | {"zero.jpg": b"", "gray.jpg": fault_files(rng)["gray.jpg"][0]})
    summary = run_ingest([source, f"{source}/nothing-here.jpg"], root, max_workers=max_workers)
    assert (summary.images, summary.reasons) == (3, {"empty": 1, "missing": 1, "not_rgb": 1})
    manifest = read_table(images_url(root, "manifest.parquet"), MANIFEST_SCHEMA)
    assert all(url.startswith(f"{s3_prefix}/photos/") for url in manifest.column("source_url").to_pylist())
    assert all(storage.exists(images_url(root, blob)) for blob in manifest.column("blob").to_pylist())


def test_given_the_bundled_photos_when_ingested_then_photo_urls_lists_each_split_by_id(tmp_path):
    # given the bundled photos ingested (one of them, motorcycle_right, hashes into the val split)
    root = str(tmp_path / "data")
    run_ingest(["builtin://samples"], root)
    manifest = sorted(
        read_table(images_url(root, "manifest.parquet"), MANIFEST_SCHEMA).to_pylist(), key=lambda row: row["id"]
    )
    # when the photos of a split are asked for
    val, train = photo_urls(root, "val"), photo_urls(root, "train")
    # then each split's stored copies come back in id order, the limit cuts, and an empty root has none
    assert val == [images_url(root, r["blob"]) for r in manifest if r["split"] == "val"] and len(val) == 1
    assert len(train) == 7 and photo_urls(root, "train", limit=2) == train[:2]
    assert storage.read_bytes(val[0]) == storage.read_bytes(sample_photo_paths()[4])  # motorcycle_right
    assert photo_urls(str(tmp_path / "nothing"), "val") == []
