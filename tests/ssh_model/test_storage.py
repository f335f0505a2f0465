import os

import pyarrow as pa
import pyarrow.parquet as pq

from ssh_model import storage


def test_given_a_local_target_when_written_atomically_then_no_temporary_file_is_left(tmp_path):
    target = tmp_path / "deep" / "out.bin"
    storage.write_bytes_atomic(str(target), b"first")
    storage.write_bytes_atomic(str(target), b"second")
    assert target.read_bytes() == b"second"
    assert os.listdir(target.parent) == ["out.bin"]


def test_given_memory_urls_when_written_then_read_back_and_exists():
    url = "memory://storage-test/a/b.bin"
    storage.write_bytes_atomic(url, b"payload")
    assert storage.exists(url)
    assert storage.read_bytes(url) == b"payload"


def test_is_under_rejects_escapes_and_other_buckets():
    assert storage.is_under("s3://bucket/out/x.png", "s3://bucket/out")
    assert not storage.is_under("s3://bucket/out/../in/x.png", "s3://bucket/out")
    assert not storage.is_under("s3://other/out/x.png", "s3://bucket/out")
    assert not storage.is_under("s3://bucket/outside.png", "s3://bucket/out")
    assert not storage.is_under("s3://bucket/out", "s3://bucket/out")
    assert not storage.is_under("/tmp/out/x.png", "s3://bucket/out")
    assert storage.is_under("/tmp/out/sub/x.png", "/tmp/out/")


def test_pyarrow_filesystem_writes_parquet_through_fsspec_for_memory_urls():
    fs, path = storage.pyarrow_filesystem("memory://storage-test/table.parquet")
    pq.write_table(pa.table({"x": [1, 2, 3]}), path, filesystem=fs)
    assert pq.read_table(path, filesystem=fs).column("x").to_pylist() == [1, 2, 3]
