import hashlib
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.ingest import MANIFEST_SCHEMA, images_url, split_of
from pipeline.triplet_plan import (
    BuildParams,
    ShardPlan,
    load_lut_bank,
    load_outlines,
    lut_bank_digest,
    outlines_digest,
    plan_shards,
    triplet_rng,
)
from pipeline.triplet_versions import (
    BUILD_MARKER,
    BUILD_PARAMS,
    VersionConflict,
    expected_groups,
    marker_payload,
    prepare_version,
    version_root_of,
    write_json,
)
from pipeline.triplets import build_shard, run_shard_builders
from ssh_model import storage
from ssh_model.lut import apply_lut, random_lut, write_cube
from ssh_model.shards import decode_batch
from ssh_model.triplets import crop_resize
from tests.pipeline.photo_cases import encode, smooth_photo

MAX_PIXELS = 80_000_000


def make_data_root(root: str, rng: np.random.Generator, count: int) -> tuple[pa.Table, dict[str, np.ndarray]]:
    """An ingested-looking data root: blobs and a manifest of ``count`` PNG photos."""
    rows, photos = [], {}
    for _ in range(count):
        photo = smooth_photo(rng, 96, 120)
        data = encode(photo, "PNG")
        image_id = hashlib.sha256(data).hexdigest()
        storage.write_bytes_atomic(images_url(root, f"blobs/{image_id}.png"), data)
        rows.append(
            {
                "id": image_id,
                "source_url": f"mem://{image_id}",
                "width": 120,
                "height": 96,
                "format": "PNG",
                "bytes": len(data),
                "split": split_of(image_id),
                "blob": f"blobs/{image_id}.png",
            }
        )
        photos[image_id] = photo
    table = pa.Table.from_pylist(sorted(rows, key=lambda r: r["id"]), schema=MANIFEST_SCHEMA)
    return table, photos


def whole_manifest_plan(manifest: pa.Table) -> ShardPlan:
    """One train shard of every photo of ``manifest``."""
    return ShardPlan("train", 0, tuple(manifest.column("id").to_pylist()), tuple(manifest.column("blob").to_pylist()))


def params_for(bank, **changes) -> BuildParams:
    values = {
        "luts": "generator:5:6",
        "lut_size": 9,
        "lut_bank_sha256": lut_bank_digest(bank),
        "image_manifest_sha256": "0" * 64,
        "per_image": 3,
        "crop_size": 32,
        "seed": 9,
        "encoding": "webp",
        "rows_per_group": 4,
        "images_per_shard": 2,
    }
    return BuildParams(**(values | changes))


@pytest.fixture(scope="module")
def bank():
    return load_lut_bank("generator:5:6", 9)


def test_lut_specs_name_the_generator_or_a_folder_of_cube_files(tmp_path, bank):
    assert len(bank) == 6 and len({lut.name for lut in bank}) == 6
    assert lut_bank_digest(load_lut_bank("generator:5:6", 9)) == lut_bank_digest(bank)
    assert lut_bank_digest(load_lut_bank("generator:6:6", 9)) != lut_bank_digest(bank)
    for seed in (1, 2):
        write_cube(random_lut(seed, size=5), str(tmp_path / f"grade-{seed}.cube"))
    assert [lut.name for lut in load_lut_bank(str(tmp_path), 9)] == ["grade-1", "grade-2"]
    os.remove(tmp_path / "grade-2.cube")
    with pytest.raises(ValueError, match="two different LUTs"):
        load_lut_bank(str(tmp_path), 9)
    for bad in ("generator:x", "generator:1:1", "generator:-1", "generator:5:6:gentle", "generator:5:6:mild:2"):
        with pytest.raises(ValueError, match="generator:SEED"):
            load_lut_bank(bad, 9)
    mild = load_lut_bank("generator:5:6:mild", 9)
    assert [lut.name for lut in mild] == [lut.name for lut in bank]
    assert lut_bank_digest(mild) != lut_bank_digest(bank)


def test_plans_cut_each_split_by_sorted_id_into_fixed_size_shards():
    rows = [
        {"id": hashlib.sha256(str(i).encode()).hexdigest(), "split": s, "blob": f"b{i}"}
        for i, s in enumerate(["train"] * 5 + ["val"] * 2)
    ]
    table = pa.Table.from_pylist(rows)
    plans = plan_shards(table, images_per_shard=2)
    assert [(p.path, len(p.image_ids)) for p in plans] == [
        ("train/part-00000.parquet", 2),
        ("train/part-00001.parquet", 2),
        ("train/part-00002.parquet", 1),
        ("val/part-00000.parquet", 2),
    ]
    train_ids = [i for p in plans if p.split == "train" for i in p.image_ids]
    assert train_ids == sorted(r["id"] for r in rows if r["split"] == "train")
    assert plan_shards(table.take([6, 5, 4, 3, 2, 1, 0]), 2) == plans  # row order is irrelevant


def test_a_triplet_rng_depends_only_on_seed_image_and_index():
    image_id = "ab" * 32
    assert triplet_rng(1, image_id, 2).random(4).tolist() == triplet_rng(1, image_id, 2).random(4).tolist()
    assert triplet_rng(1, image_id, 2).random() != triplet_rng(1, image_id, 3).random()
    assert triplet_rng(1, image_id, 2).random() != triplet_rng(2, image_id, 2).random()


def test_given_a_shard_plan_when_built_twice_then_the_bytes_match_and_triplets_follow_their_luts(tmp_path, bank):
    root = str(tmp_path / "data")
    manifest, photos = make_data_root(root, np.random.default_rng(50), 3)
    plan = whole_manifest_plan(manifest)
    params = params_for(bank)
    first = build_shard(plan, bank, params, root, str(tmp_path / "v-a"), MAX_PIXELS)
    build_shard(plan, bank, params, root, str(tmp_path / "v-b"), MAX_PIXELS)
    a, b = (storage.read_bytes(str(tmp_path / v / plan.path)) for v in ("v-a", "v-b"))
    assert a == b
    assert first["rows"] == 9 and first["row_groups"] == [4, 4, 1] == expected_groups(plan, params)

    batch = decode_batch(pq.read_table(str(tmp_path / "v-a" / plan.path)))
    luts = {lut.name: lut for lut in bank}
    assert batch["k"].tolist() == [0, 1, 2] * 3
    assert batch["image_id"] == [i for i in plan.image_ids for _ in range(3)]
    for row in range(9):
        assert batch["lut_a"][row] != batch["lut_b"][row]
        photo = photos[batch["image_id"][row]]
        crop = crop_resize(photo, tuple(batch["content_box"][row]), 32, bool(batch["content_flip"][row]))
        expected_b = apply_lut(crop, luts[batch["lut_b"][row]])
        assert np.abs(expected_b.astype(int) - batch["content_b"][row]).mean() < 2.0  # pseudo ground truth
        assert batch["content_a"][row].shape == (32, 32, 3)


def test_given_an_interrupted_build_when_prepared_again_then_good_shards_are_kept_and_the_rest_removed(tmp_path, bank):
    root = str(tmp_path / "data")
    manifest, _ = make_data_root(root, np.random.default_rng(51), 5)
    params = params_for(bank)
    plans = plan_shards(manifest, params.images_per_shard)
    version = version_root_of(root, "v1")
    assert prepare_version(version, params, plans, overwrite=False).todo == plans
    kept = build_shard(plans[0], bank, params, root, version, MAX_PIXELS)
    storage.write_bytes_atomic(f"{version}/{plans[-1].path}.0123.tmp", b"half a shard")
    storage.write_bytes_atomic(f"{version}/train/part-00077.parquet", b"a shard nobody planned")
    storage.write_bytes_atomic(f"{version}/{plans[1].path}", b"not parquet under a planned name")

    resumed = prepare_version(version, params, plans, overwrite=False)
    assert [e["path"] for e in resumed.kept] == [plans[0].path] and resumed.kept[0]["rows"] == kept["rows"]
    assert resumed.todo == plans[1:]
    fs, path = storage.filesystem(version)
    assert sorted(p[len(path) + 1 :] for p in fs.find(path)) == sorted([BUILD_PARAMS, plans[0].path])

    other = params_for(bank, seed=10)
    assert prepare_version(version, other, plans, overwrite=False).todo == plans  # other params: start over
    assert not storage.exists(f"{version}/{plans[0].path}")


def test_given_a_complete_version_then_same_params_are_a_no_op_and_other_params_conflict(tmp_path, bank):
    version = str(tmp_path / "triplets" / "v1")
    params = params_for(bank)
    write_json(f"{version}/{BUILD_MARKER}", marker_payload("v1", params, []))
    assert prepare_version(version, params, [], overwrite=False).complete["params"] == params.as_dict()
    with pytest.raises(VersionConflict, match="seed"):
        prepare_version(version, params_for(bank, seed=3), [], overwrite=False)
    redo = prepare_version(version, params_for(bank, seed=3), [], overwrite=True)
    assert redo.complete is None and not storage.exists(f"{version}/{BUILD_MARKER}")
    with pytest.raises(ValueError, match="bad version"):
        version_root_of(str(tmp_path), "../escape")


def test_given_ray_and_s3_when_shards_are_built_then_every_plan_is_written_once(ray_local, s3_prefix, bank):
    root = f"{s3_prefix}/data"
    manifest, _ = make_data_root(root, np.random.default_rng(52), 4)
    params = params_for(bank, images_per_shard=1, per_image=2)
    plans = plan_shards(manifest, 1)
    version = version_root_of(root, "v1")
    entries = run_shard_builders(plans, params, root, version)
    assert sorted(e["path"] for e in entries) == sorted(p.path for p in plans)
    assert all(e["rows"] == 2 and e["row_groups"] == [2] for e in entries)
    for plan in plans:
        fs, path = storage.pyarrow_filesystem(f"{version}/{plan.path}")
        table = pq.read_table(path, filesystem=fs)
        assert table.column("image_id").to_pylist() == [plan.image_ids[0]] * 2
    payload = marker_payload("v1", params, entries)
    assert payload["triplets"] == 8 and json.loads(json.dumps(payload)) == payload


def test_given_a_folder_of_object_masks_when_loaded_then_hard_shrunk_outlines_in_path_order(tmp_path):
    folder = tmp_path / "masks" / "bsds500"
    tall = np.zeros((400, 300), np.uint8)
    tall[50:350, 100:200] = 255
    wide = np.zeros((60, 90), np.uint8)
    wide[20:40, 10:80] = 255
    (folder / "b_1.png").parent.mkdir(parents=True)
    (folder / "b_1.png").write_bytes(encode(tall, "PNG"))
    (folder / "a_1.png").write_bytes(encode(wide, "PNG"))
    (folder / "notes.txt").write_text("not a mask")

    outlines = load_outlines(str(tmp_path / "masks"))

    assert [o.shape for o in outlines] == [(60, 90), (160, 120)]  # a_1 (already small), b_1 shrunk to 160
    assert all(o.dtype == bool for o in outlines)
    assert outlines[1][20:140, 40:80].all() and not outlines[1][:15].any()
    assert outlines_digest(outlines) == outlines_digest(load_outlines(str(tmp_path / "masks")))
    with pytest.raises(FileNotFoundError, match="no object masks"):
        load_outlines(str(tmp_path / "empty"))


def test_given_outlines_and_a_natural_fraction_when_a_shard_is_built_then_regions_and_identity_grades_appear(tmp_path, bank):
    root = str(tmp_path / "data")
    manifest, photos = make_data_root(root, np.random.default_rng(51), 2)
    plan = whole_manifest_plan(manifest)
    outline = np.zeros((40, 40), bool)
    outline[5:35, 15:25] = True
    params = params_for(bank, per_image=8, region_fraction=0.5, natural_fraction=0.5)
    build_shard(plan, bank, params, root, str(tmp_path / "v"), MAX_PIXELS, outlines=[outline])
    batch = decode_batch(pq.read_table(str(tmp_path / "v" / plan.path)))
    assert "identity" in batch["lut_b"] and set(batch["lut_b"]) - {"identity"}
    assert {"region", "crops"} <= set(batch["layout"])
