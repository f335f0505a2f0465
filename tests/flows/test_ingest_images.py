"""Flow ``ingest-images`` through Prefect's test harness, on local folders, the bundled photos and real S3."""

from collections import Counter

import numpy as np
import pyarrow.parquet as pq

from flows.ingest_images import ingest_images
from pipeline.configs import IngestConfig
from pipeline.ingest import MANIFEST_SCHEMA, images_url, read_table
from ssh_model import storage
from ssh_model.samples import sample_photo_paths
from tests.pipeline.photo_cases import fault_files, good_files, write_files


def test_given_bundled_photos_and_a_folder_with_faults_when_the_flow_runs_then_each_fault_is_a_reject(
    prefect_harness, tmp_path, run_logs
):
    rng = np.random.default_rng(40)
    faults = fault_files(rng)
    folder = str(tmp_path / "photos")
    write_files(folder, good_files(rng, 2) | {name: data for name, (data, _) in faults.items()})
    root = str(tmp_path / "data")

    result = ingest_images(
        data_root=root, config=IngestConfig(sources=["builtin://samples", folder, str(tmp_path / "no-such.jpg")])
    )

    bundled = len(sample_photo_paths())
    assert result["images"] == result["added"] == bundled + 2
    manifest = read_table(images_url(root, "manifest.parquet"), MANIFEST_SCHEMA)
    builtin = sorted(u for u in manifest.column("source_url").to_pylist() if u.startswith("builtin://"))
    assert builtin == sorted(f"builtin://samples/{p.rsplit('/', 1)[1]}" for p in sample_photo_paths())
    assert set(manifest.column("split").to_pylist()) <= {"train", "val", "test"}
    assert min(manifest.column("width").to_pylist()) >= 128
    rejects = pq.read_table(images_url(root, "rejects.parquet")).to_pylist()
    by_name = {r["url"].rsplit("/", 1)[1]: r["reason"] for r in rejects}
    assert by_name == {name: reason for name, (_, reason) in faults.items()} | {"no-such.jpg": "missing"}
    assert result["reasons"] == dict(sorted(Counter(by_name.values()).items()))
    assert any(m.startswith(f"ingest: {bundled + 2 + len(faults) + 1}/") for m in run_logs), run_logs

    manifest_bytes = storage.read_bytes(images_url(root, "manifest.parquet"))
    again = ingest_images(
        data_root=root, config=IngestConfig(sources=["builtin://samples", folder, str(tmp_path / "no-such.jpg")])
    )
    assert (again["added"], again["skipped_known"], again["manifest_written"]) == (0, bundled + 2, False)
    assert storage.read_bytes(images_url(root, "manifest.parquet")) == manifest_bytes


def test_given_an_s3_bucket_when_the_flow_runs_twice_on_a_growing_glob_then_only_new_photos_are_added(
    prefect_harness, s3_prefix
):
    rng = np.random.default_rng(41)
    write_files(f"{s3_prefix}/in", good_files(rng, 2))
    root = f"{s3_prefix}/data"
    first = ingest_images(data_root=root, config=IngestConfig(sources=[f"{s3_prefix}/in/*.*"], max_workers=2))
    write_files(f"{s3_prefix}/in", good_files(rng, 1, start=2))
    second = ingest_images(data_root=root, config=IngestConfig(sources=[f"{s3_prefix}/in/*.*"], max_workers=2))
    assert (first["added"], second["added"], second["skipped_known"], second["images"]) == (2, 1, 2, 3)
    manifest = read_table(images_url(root, "manifest.parquet"), MANIFEST_SCHEMA)
    assert manifest.column("id").to_pylist() == sorted(manifest.column("id").to_pylist())
    assert all(storage.exists(images_url(root, b)) for b in manifest.column("blob").to_pylist())
