"""Flow ``build-triplets`` through Prefect's test harness, on real local Ray and the real local S3 server."""

import json
import uuid

import pytest

from flows.build_triplets import build_triplets
from flows.ingest_images import ingest_images
from pipeline.configs import TripletConfig
from pipeline.ingest import MANIFEST_SCHEMA, images_url, read_table
from pipeline.triplet_versions import BUILD_MARKER, VersionConflict
from ssh_model import storage
from ssh_model.dataset import TripletDataset
from ssh_model.shards import DEFAULT_ENCODING

OPTIONS = {"per_image": 2, "crop_size": 64, "seed": 3, "luts": "generator:1:8", "triplets_per_shard": 4}


def shard_bytes(version_root: str) -> dict[str, bytes]:
    marker = json.loads(storage.read_bytes(f"{version_root}/{BUILD_MARKER}"))
    return {entry["path"]: storage.read_bytes(f"{version_root}/{entry['path']}") for entry in marker["files"]}


@pytest.fixture(scope="module")
def built(prefect_harness, ray_local, s3_bucket):
    root = f"s3://{s3_bucket}/build-{uuid.uuid4().hex[:8]}"
    ingest_images(data_root=root)
    result = build_triplets(data_root=root, version="v1", config=TripletConfig(**OPTIONS))
    return root, result


def test_given_ingested_photos_when_built_then_the_marker_counts_every_shard_and_the_reader_agrees(built):
    root, result = built
    photos = read_table(images_url(root, "manifest.parquet"), MANIFEST_SCHEMA).to_pylist()
    assert result["built"] and result["triplets"] == 2 * len(photos)
    marker = json.loads(storage.read_bytes(result["manifest"]))
    by_split = {s: sum(p["split"] == s for p in photos) for s in {p["split"] for p in photos}}
    assert {s: c["images"] for s, c in marker["counts"].items()} == by_split
    assert all(entry["path"].startswith(f"{entry['split']}/part-") for entry in marker["files"])
    assert all(max(entry["row_groups"]) <= 4 for entry in marker["files"])
    assert marker["params"]["encoding"] == DEFAULT_ENCODING
    assert set(marker["schema"]) >= {"content_b", "lut_a"}
    assert not storage.exists(f"{result['version_root']}/train/.part-00000.parquet.tmp")

    dataset = TripletDataset(result["version_root"], split="train", batch_size=2, rank=0, world_size=1)
    batches = list(dataset)
    assert sum(len(b["triplet_id"]) for b in batches) == marker["counts"]["train"]["triplets"]
    assert batches[0]["content_b"].shape == (2, 64, 64, 3)


def test_given_a_complete_version_when_run_again_then_nothing_is_rebuilt(built):
    root, result = built
    before = shard_bytes(result["version_root"])
    again = build_triplets(data_root=root, version="v1", config=TripletConfig(**OPTIONS))
    assert not again["built"] and again["triplets"] == result["triplets"]
    assert shard_bytes(result["version_root"]) == before


def test_given_the_same_inputs_on_one_cpu_then_another_version_has_identical_bytes(built):
    root, result = built
    other = build_triplets(data_root=root, version="v1-one-cpu", config=TripletConfig(num_cpus=1, **OPTIONS))
    assert shard_bytes(other["version_root"]) == shard_bytes(result["version_root"])


def test_given_a_crashed_build_when_run_again_then_it_completes_with_the_same_bytes(built):
    root, result = built
    version_root = result["version_root"]
    before = shard_bytes(version_root)
    fs, path = storage.filesystem(version_root)
    fs.rm(f"{path}/{BUILD_MARKER}")  # as if the build died before its last step ...
    lost = sorted(before)[-1]
    fs.rm(f"{path}/{lost}")  # ... with one shard not written yet
    storage.write_bytes_atomic(f"{version_root}/{lost}.partial.tmp", b"garbage from the crash")
    fs.invalidate_cache()

    resumed = build_triplets(data_root=root, version="v1", config=TripletConfig(**OPTIONS))
    assert resumed["built"] and resumed["kept_shards"] == len(before) - 1
    assert shard_bytes(version_root) == before
    assert not storage.exists(f"{version_root}/{lost}.partial.tmp")


def test_given_a_complete_version_when_built_with_other_parameters_then_the_flow_refuses(built):
    root, _ = built
    with pytest.raises(VersionConflict, match="seed"):
        build_triplets(data_root=root, version="v1", config=TripletConfig(**(OPTIONS | {"seed": 4})))


def test_given_a_region_fraction_and_mild_grades_then_both_layouts_are_built_and_recorded(built):
    # given the ingested photos of the module's build
    root, _ = built
    options = OPTIONS | {"per_image": 4, "luts": "generator:1:8:mild"}
    # when half the triplets are asked for in the region layout, with mostly gentle grades
    result = build_triplets(data_root=root, version="v1-region", config=TripletConfig(region_fraction=0.5, **options))
    # then the parameters say so, and the reader hands out triplets of both layouts
    assert result["params"]["region_fraction"] == 0.5 and result["params"]["luts"] == "generator:1:8:mild"
    rows = [
        batch
        for split in result["counts"]
        for batch in TripletDataset(result["version_root"], split=split, batch_size=1, rank=0, world_size=1)
    ]
    layouts = [layout for batch in rows for layout in batch["layout"]]
    assert len(layouts) == result["triplets"] and set(layouts) == {"crops", "region"}
    for batch in rows:
        if batch["layout"] == ["region"]:  # the content box lies inside the scene box
            (cx0, cy0, cx1, cy1), (sx0, sy0, sx1, sy1) = batch["content_box"][0], batch["reference_box"][0]
            assert sx0 <= cx0 < cx1 <= sx1 and sy0 <= cy0 < cy1 <= sy1
    with pytest.raises(ValueError, match="region_fraction must be between 0 and 1, got 1.5"):
        build_triplets(data_root=root, version="v1-bad", config=TripletConfig(region_fraction=1.5, **options))
