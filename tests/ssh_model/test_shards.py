import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ssh_model import storage
from ssh_model.shards import (
    IMAGE_COLUMNS,
    LOSSLESS_ENCODINGS,
    TRIPLET_SCHEMA,
    ShardWriter,
    check_schema,
    decode_batch,
    decode_column,
    decode_pixels,
    encode_pixels,
    rows_table,
    schema_doc,
    shard_info,
    triplet_row,
)
from ssh_model.triplets import Triplet
from tests.ssh_model.shard_cases import random_rows


@pytest.mark.parametrize("encoding", LOSSLESS_ENCODINGS)
def test_given_a_lossless_encoding_when_an_image_round_trips_then_every_pixel_is_kept(encoding):
    image = np.random.default_rng(1).integers(0, 256, size=(24, 24, 3), dtype=np.uint8)
    decoded = decode_pixels(encode_pixels(image, encoding), encoding, 24)
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, image)


def test_given_jpeg_when_an_image_round_trips_then_it_is_close_but_not_exact():
    smooth = np.linspace(0, 255, 64 * 64 * 3).reshape(64, 64, 3).astype(np.uint8)
    decoded = decode_pixels(encode_pixels(smooth, "jpeg"), "jpeg", 64)
    error = np.abs(decoded.astype(int) - smooth).mean()
    assert 0 < error < 8


def test_given_wrong_sizes_or_encodings_then_errors_name_the_problem():
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="192 bytes, expected 243"):
        decode_pixels(encode_pixels(image, "raw"), "raw", 9)
    with pytest.raises(ValueError, match="expected"):
        decode_pixels(encode_pixels(image, "png"), "png", 16)
    with pytest.raises(ValueError, match="unknown encoding"):
        encode_pixels(image, "gif")
    with pytest.raises(ValueError, match="uint8"):
        encode_pixels(image.astype(np.float32), "png")


def test_every_schema_field_is_documented_and_the_images_are_the_training_keys():
    docs = schema_doc()
    assert list(docs) == TRIPLET_SCHEMA.names
    assert all(len(doc.split(": ", 1)[1]) > 5 for doc in docs.values())
    assert set(IMAGE_COLUMNS) <= set(TRIPLET_SCHEMA.names)
    assert TRIPLET_SCHEMA.metadata[b"ssh.schema_version"] == b"2"


def test_given_rows_when_written_then_row_groups_have_the_asked_size_and_the_file_documents_itself(tmp_path):
    rows, _ = random_rows(np.random.default_rng(2), 150)
    url = str(tmp_path / "train" / "part-00000.parquet")
    with ShardWriter(url, rows_per_group=64) as writer:
        for row in rows:
            writer.write(row)
    assert writer.info.row_groups == [64, 64, 22]
    assert writer.info.bytes == os.path.getsize(url)
    assert shard_info(url).row_groups == [64, 64, 22]
    schema = pq.read_schema(url)
    check_schema(schema, url)
    assert schema.field("content_b").metadata[b"doc"].startswith(b"LUT_beta(crop 1)")
    assert os.listdir(tmp_path / "train") == ["part-00000.parquet"]  # no temporary file left


def test_given_the_same_rows_when_written_twice_then_the_files_are_byte_identical(tmp_path):
    rows, _ = random_rows(np.random.default_rng(3), 40, encoding="raw")
    for name in ("a", "b"):
        with ShardWriter(str(tmp_path / f"{name}.parquet"), rows_per_group=16, encoding="raw") as writer:
            for row in rows:
                writer.write(row)
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


@pytest.mark.parametrize("encoding", ["webp", "raw"])
def test_given_a_row_group_when_decoded_then_images_and_metadata_come_back(tmp_path, encoding):
    rows, images = random_rows(np.random.default_rng(4), 20, size=16, encoding=encoding)
    url = str(tmp_path / "s.parquet")
    with ShardWriter(url, rows_per_group=8, encoding=encoding) as writer:
        for row in rows:
            writer.write(row)
    batch = decode_batch(pq.ParquetFile(url).read_row_group(1))
    assert batch["content_a"].shape == (8, 16, 16, 3) and batch["content_a"].dtype == np.uint8
    for position, tid in enumerate(batch["triplet_id"]):
        for key in IMAGE_COLUMNS:
            np.testing.assert_array_equal(batch[key][position], images[tid][key])
    assert batch["triplet_id"] == [r["triplet_id"] for r in rows[8:16]]
    np.testing.assert_array_equal(batch["content_box"], [r["content_box"] for r in rows[8:16]])
    assert batch["content_box"].dtype == np.int32 and batch["content_flip"].dtype == bool
    assert batch["lut_b"] == [r["lut_b"] for r in rows[8:16]]


def test_given_raw_images_in_several_chunks_then_the_column_decodes_into_one_writable_array():
    rows, images = random_rows(np.random.default_rng(5), 6, size=8, encoding="raw")
    table = pa.concat_tables([rows_table(rows[:2]), rows_table(rows[2:]).slice(1)])  # chunks, an offset
    decoded = decode_column(table.column("reference_b"), "raw", 8)
    assert decoded.shape == (5, 8, 8, 3) and decoded.flags.writeable
    for position, row in enumerate(rows[:2] + rows[3:]):
        np.testing.assert_array_equal(decoded[position], images[row["triplet_id"]]["reference_b"])
    with pytest.raises(ValueError, match=r"\[192\] bytes, expected 243"):
        decode_column(table.column("reference_b"), "raw", 9)


def test_given_a_triplet_when_made_a_row_then_it_carries_boxes_flips_luts_and_ids():
    rng = np.random.default_rng(6)
    pixels = [rng.integers(0, 256, size=(12, 12, 3), dtype=np.uint8) for _ in range(4)]
    triplet = Triplet(
        *pixels,
        content_box=(1, 2, 30, 31),
        reference_box=(5, 6, 40, 41),
        content_flip=True,
        reference_flip=False,
        lut_a="gen-s0-i1",
        lut_b="gen-s0-i7",
        layout="region",
    )
    row = triplet_row(triplet, image_id="ab" * 32, split="val", k=3, seed=11, encoding="png")
    table = rows_table([row])
    assert table.schema.equals(TRIPLET_SCHEMA)
    assert row["triplet_id"] == "abababababababab-s11-k3"
    assert (row["crop_size"], row["split"]) == (12, "val")
    assert (row["lut_a"], row["lut_b"]) == ("gen-s0-i1", "gen-s0-i7")
    assert row["content_box"] == [1, 2, 30, 31] and row["content_flip"] is True
    assert row["layout"] == "region" and decode_batch(table)["layout"] == ["region"]
    np.testing.assert_array_equal(decode_pixels(row["content_b"], "png", 12), pixels[3])


def test_given_an_error_while_writing_then_no_shard_and_no_temporary_file_is_left(tmp_path):
    rows, _ = random_rows(np.random.default_rng(7), 10)
    for url in (str(tmp_path / "broken.parquet"), "memory://shard-tests/broken.parquet"):
        with pytest.raises(RuntimeError, match="boom"), ShardWriter(url, rows_per_group=4) as writer:
            for row in rows:
                writer.write(row)
            raise RuntimeError("boom")
        assert not storage.exists(url)
    assert os.listdir(tmp_path) == []


def test_given_s3_when_a_shard_is_written_and_aborted_then_only_the_finished_one_exists(s3_prefix):
    rows, images = random_rows(np.random.default_rng(8), 12)
    good, bad = f"{s3_prefix}/good.parquet", f"{s3_prefix}/bad.parquet"
    with ShardWriter(good, rows_per_group=5) as writer:
        for row in rows:
            writer.write(row)
    with pytest.raises(RuntimeError), ShardWriter(bad, rows_per_group=5) as writer:
        writer.write(rows[0])
        raise RuntimeError("interrupted")
    assert storage.exists(good) and not storage.exists(bad)
    info = shard_info(good)
    assert info.row_groups == [5, 5, 2] and info.rows == 12 and info.bytes > 0
    fs, path = storage.pyarrow_filesystem(good)
    batch = decode_batch(pq.read_table(path, filesystem=fs))
    np.testing.assert_array_equal(batch["content_b"][11], images[rows[11]["triplet_id"]]["content_b"])
