"""Triplet shards: the Parquet schema (defined here, once), row encoding and decoding, the shard writer.

One row is one dual-LUT triplet made from one photo (see ``ssh_model.triplets``). Fields:

    triplet_id      string      "{image_id[:16]}-s{seed}-k{k}": unique within a build
    image_id        string      sha256 (hex) of the source photo's bytes (the image manifest's id)
    split           string      "train" | "val" | "test" (the photo's split, from its hash)
    k               int32       index of this triplet among the photo's ``per_image`` triplets
    seed            int64       the build seed; the triplet's RNG is seeded with (seed, image id, k)
    lut_a           string      name of LUT alpha (content_a, reference_a)
    lut_b           string      name of LUT beta (reference_b, content_b)
    content_box     int32[4]    crop 1 in source pixels, (x0, y0, x1, y1)
    reference_box   int32[4]    crop 2 in source pixels, (x0, y0, x1, y1)
    content_flip    bool        crop 1 was mirrored left-right
    reference_flip  bool        crop 2 was mirrored left-right
    layout          string      "crops" (two overlapping crops) | "region" (crop 1: a foreground
                                region's box, crop 2: the scene around it; ``ssh_model.triplets``)
    crop_size       int32       S: every image of the row is S x S x 3
    encoding        string      how the four images are stored (see ENCODINGS)
    content_a       binary      LUT_alpha(crop 1)
    reference_a     binary      LUT_alpha(crop 2)
    reference_b     binary      LUT_beta(crop 2)
    content_b       binary      LUT_beta(crop 1), the pseudo ground truth

The same documentation travels inside every file (field metadata ``doc``; schema metadata
``ssh.schema_version``). Files are written with row groups of ``ROWS_PER_GROUP`` rows, the unit
the reader (``ssh_model.dataset``) streams, shuffles and splits across ranks and workers.

Image encoding, chosen by ``benchmarks/bench_triplets.py`` (256 px images made by ``make_triplet``
from the bundled photos; CPU time of one thread; ``benchmarks/results/triplets.json``):

    encoding                encode ms  decode ms  KiB/image  lossless
    raw (uint8 HWC) + zstd     0.45       0.18       157      yes   <- default
    webp (lossless, m0)        2.50       1.43        90      yes
    png (level 1)              4.83       2.08       110      yes
    jpeg q95                   0.35       0.62        27      no (errors up to 76 levels)

``raw`` is the default: exact pixels (the pseudo ground truth stays lossless), a decode about 8x
cheaper than WebP's (a reader feeding ~1000 triplets/s needs about one core for it instead of
six or more), and generation ~1.5x faster (WebP's encode costs about as much as making the
triplet). Parquet's zstd on the image columns hardly compresses photos (~0.8x), so the price is
size: ~630 KB per 256 px triplet against ~350 KB for ``webp``, the choice when storage or
network bandwidth, not CPU, is short. JPEG is here for comparison only and refused for building.
"""

from __future__ import annotations

import io
import logging
import posixpath
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.spec import AbstractBufferedFile
from PIL import Image

from ssh_model import storage

if TYPE_CHECKING:
    from ssh_model.triplets import Triplet

logger = logging.getLogger(__name__)

SCHEMA_VERSION = "2"  # 2: the layout column
IMAGE_COLUMNS = ("content_a", "reference_a", "reference_b", "content_b")
ENCODINGS = ("webp", "png", "raw", "jpeg")
LOSSLESS_ENCODINGS = ("webp", "png", "raw")
DEFAULT_ENCODING = "raw"
ROWS_PER_GROUP = 64
PILLOW_FORMATS = {"webp": "WEBP", "png": "PNG", "jpeg": "JPEG"}


def _field(name: str, kind: pa.DataType, doc: str) -> pa.Field:
    return pa.field(name, kind, nullable=False, metadata={"doc": doc})


BOX = pa.list_(pa.int32(), 4)
TRIPLET_SCHEMA = pa.schema(
    [
        _field("triplet_id", pa.string(), "{image_id[:16]}-s{seed}-k{k}, unique within a build"),
        _field("image_id", pa.string(), "sha256 hex of the source photo's bytes (image manifest id)"),
        _field("split", pa.string(), "train | val | test, the photo's split (a function of its hash)"),
        _field("k", pa.int32(), "index of the triplet among the photo's per_image triplets"),
        _field("seed", pa.int64(), "build seed; the triplet RNG is seeded with (seed, image id, k)"),
        _field("lut_a", pa.string(), "name of LUT alpha (content_a, reference_a)"),
        _field("lut_b", pa.string(), "name of LUT beta (reference_b, content_b)"),
        _field("content_box", BOX, "crop 1 in source pixels (x0, y0, x1, y1)"),
        _field("reference_box", BOX, "crop 2 in source pixels (x0, y0, x1, y1)"),
        _field("content_flip", pa.bool_(), "crop 1 mirrored left-right"),
        _field("reference_flip", pa.bool_(), "crop 2 mirrored left-right"),
        _field("layout", pa.string(), "crops (two overlapping crops) | region (a foreground region and its scene)"),
        _field("crop_size", pa.int32(), "S: each image is S x S x 3 uint8"),
        _field("encoding", pa.string(), "image encoding: webp (lossless) | png | raw (uint8 HWC) | jpeg"),
        _field("content_a", pa.binary(), "LUT_alpha(crop 1)"),
        _field("reference_a", pa.binary(), "LUT_alpha(crop 2)"),
        _field("reference_b", pa.binary(), "LUT_beta(crop 2)"),
        _field("content_b", pa.binary(), "LUT_beta(crop 1): the pseudo ground truth"),
    ],
    metadata={"ssh.schema_version": SCHEMA_VERSION, "ssh.kind": "dual-lut-triplets"},
)
METADATA_COLUMNS = tuple(name for name in TRIPLET_SCHEMA.names if name not in IMAGE_COLUMNS)


def schema_doc() -> dict[str, str]:
    """Field name -> ``type: doc``, e.g. for a build's manifest."""
    return {f.name: f"{f.type}: {f.metadata[b'doc'].decode()}" for f in TRIPLET_SCHEMA}


# -- images -----------------------------------------------------------------------------------------


def encode_pixels(image: np.ndarray, encoding: str = DEFAULT_ENCODING) -> bytes:
    """uint8 (S, S, 3) -> bytes in ``encoding``."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    if encoding == "raw":
        return np.ascontiguousarray(image).tobytes()
    buffer = io.BytesIO()
    picture = Image.fromarray(image)
    if encoding == "webp":
        picture.save(buffer, format="WEBP", lossless=True, method=0, quality=0)
    elif encoding == "png":
        picture.save(buffer, format="PNG", compress_level=1)
    elif encoding == "jpeg":
        picture.save(buffer, format="JPEG", quality=95)
    else:
        raise ValueError(f"unknown encoding {encoding!r}; expected one of {ENCODINGS}")
    return buffer.getvalue()


def decode_pixels(data: bytes, encoding: str, size: int) -> np.ndarray:
    """Bytes of one image -> uint8 (size, size, 3)."""
    if encoding == "raw":
        expected = size * size * 3
        if len(data) != expected:
            raise ValueError(f"raw image has {len(data)} bytes, expected {expected} for {size}x{size}x3")
        return np.frombuffer(data, np.uint8).reshape(size, size, 3)
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}; expected one of {ENCODINGS}")
    with Image.open(io.BytesIO(data), formats=[PILLOW_FORMATS[encoding]]) as picture:
        picture.load()
        if picture.mode != "RGB":
            picture = picture.convert("RGB")
        image = np.asarray(picture)
    if image.shape != (size, size, 3):
        raise ValueError(f"decoded image is {image.shape}, expected {(size, size, 3)}")
    return image


def decode_column(column: pa.Array | pa.ChunkedArray, encoding: str, size: int) -> np.ndarray:
    """A binary column of one encoding -> a new, writable uint8 (B, size, size, 3) array.

    ``raw`` values are copied straight from the Arrow buffers (one copy, no per-row objects).
    """
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    count = sum(len(chunk) for chunk in chunks)
    out = np.empty((count, size, size, 3), np.uint8)
    if encoding == "raw":
        step = size * size * 3
        flat = out.reshape(count, step)
        position = 0
        for chunk in chunks:
            rows = len(chunk)
            if rows == 0:
                continue
            offsets = np.frombuffer(chunk.buffers()[1], np.int32, rows + 1, chunk.offset * 4)
            if not np.all(np.diff(offsets) == step):
                sizes = np.unique(np.diff(offsets)).tolist()
                raise ValueError(f"raw images of {sizes} bytes, expected {step} for {size}x{size}x3")
            values = np.frombuffer(chunk.buffers()[2], np.uint8, rows * step, int(offsets[0]))
            flat[position : position + rows] = values.reshape(rows, step)
            position += rows
        return out
    position = 0
    for chunk in chunks:
        for data in chunk.to_pylist():
            out[position] = decode_pixels(data, encoding, size)
            position += 1
    return out


# -- rows -------------------------------------------------------------------------------------------


def triplet_id(image_id: str, seed: int, k: int) -> str:
    return f"{image_id[:16]}-s{seed}-k{k}"


def triplet_row(
    triplet: Triplet, *, image_id: str, split: str, k: int, seed: int, encoding: str = DEFAULT_ENCODING
) -> dict[str, Any]:
    """One schema row for ``triplet`` (images encoded with ``encoding``)."""
    size = int(triplet.content_a.shape[0])
    row: dict[str, Any] = {
        "triplet_id": triplet_id(image_id, seed, k),
        "image_id": image_id,
        "split": split,
        "k": int(k),
        "seed": int(seed),
        "lut_a": triplet.lut_a,
        "lut_b": triplet.lut_b,
        "content_box": [int(v) for v in triplet.content_box],
        "reference_box": [int(v) for v in triplet.reference_box],
        "content_flip": bool(triplet.content_flip),
        "reference_flip": bool(triplet.reference_flip),
        "layout": triplet.layout,
        "crop_size": size,
        "encoding": encoding,
    }
    for key in IMAGE_COLUMNS:
        image = getattr(triplet, key)
        if image.shape != (size, size, 3):
            raise ValueError(f"{key} is {image.shape}, expected {(size, size, 3)}")
        row[key] = encode_pixels(image, encoding)
    return row


def rows_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Rows (dicts with every schema field) -> a table with ``TRIPLET_SCHEMA``."""
    columns = {name: [row[name] for row in rows] for name in TRIPLET_SCHEMA.names}  # faster than from_pylist
    return pa.Table.from_pydict(columns, schema=TRIPLET_SCHEMA)


def decode_batch(batch: pa.RecordBatch | pa.Table, images: Iterable[str] = IMAGE_COLUMNS) -> dict[str, Any]:
    """Decode a batch of rows: each image column -> uint8 (B, S, S, 3), plus the metadata.

    Metadata: ``triplet_id``, ``image_id``, ``split``, ``lut_a``, ``lut_b``, ``layout`` as lists of str;
    ``k``, ``crop_size`` int32 (B,); ``content_box``, ``reference_box`` int32 (B, 4);
    ``content_flip``, ``reference_flip`` bool (B,).
    """
    sizes = set(batch.column("crop_size").to_pylist())
    encodings = set(batch.column("encoding").to_pylist())
    if len(sizes) > 1 or len(encodings) > 1:
        raise ValueError(f"a batch must have one crop size and one encoding, got {sorted(sizes)} and {sorted(encodings)}")
    out: dict[str, Any] = {}
    count = batch.num_rows
    size = sizes.pop() if sizes else 0
    encoding = encodings.pop() if encodings else DEFAULT_ENCODING
    for key in images:
        out[key] = decode_column(batch.column(key), encoding, size)
    for key in ("triplet_id", "image_id", "split", "lut_a", "lut_b", "layout"):
        out[key] = batch.column(key).to_pylist()
    for key in ("k", "crop_size"):
        out[key] = np.array(batch.column(key).to_numpy(zero_copy_only=False), np.int32)
    for key in ("content_box", "reference_box"):
        column = batch.column(key)
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        out[key] = np.array(column.flatten().to_numpy(zero_copy_only=False), np.int32).reshape(count, 4)
    for key in ("content_flip", "reference_flip"):
        out[key] = np.array(batch.column(key).to_numpy(zero_copy_only=False), bool)
    return out


# -- files ------------------------------------------------------------------------------------------


@dataclass
class ShardInfo:
    """What a written shard holds: its URL, rows, rows per row group and size in bytes."""

    url: str
    rows: int = 0
    row_groups: list[int] = field(default_factory=list)
    bytes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"url": self.url, "rows": self.rows, "row_groups": list(self.row_groups), "bytes": self.bytes}


def _is_local(fs: Any) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocol or "local" in protocol


class ShardWriter:
    """Stream rows into one Parquet shard with fixed-size row groups; the file appears complete or not at all.

    On a local disk the rows go to a hidden temporary file renamed into place on ``close``; on S3 a
    multipart upload only becomes an object when it completes. ``abort`` (or leaving the ``with``
    block by an exception) leaves nothing behind.

    Args:
        url: the shard's URL (any fsspec URL; S3 goes through s3fs and our endpoint setting).
        rows_per_group: rows per Parquet row group (the reader's unit of work).
        encoding: the image encoding of the rows; binary columns of ``raw`` images get zstd,
            already-compressed images are stored as they are.
    """

    def __init__(self, url: str, rows_per_group: int = ROWS_PER_GROUP, encoding: str = DEFAULT_ENCODING) -> None:
        if rows_per_group < 1:
            raise ValueError(f"rows_per_group must be at least 1, got {rows_per_group}")
        self.info = ShardInfo(url)
        self.rows_per_group = rows_per_group
        self._pending: list[Mapping[str, Any]] = []
        self._fs, path = storage.filesystem(url)
        self._final = path
        parent = posixpath.dirname(path)
        if parent:
            self._fs.makedirs(parent, exist_ok=True)
        self._target = (
            posixpath.join(parent, f".{posixpath.basename(path)}.{uuid.uuid4().hex}.tmp") if _is_local(self._fs) else path
        )
        self._handle = self._fs.open(self._target, "wb")
        image_codec = "zstd" if encoding == "raw" else "none"
        codecs = {name: image_codec if name in IMAGE_COLUMNS else "zstd" for name in TRIPLET_SCHEMA.names}
        self._writer = pq.ParquetWriter(
            self._handle,
            TRIPLET_SCHEMA,
            compression=codecs,
            use_dictionary=["split", "encoding", "lut_a", "lut_b"],
            write_statistics=list(METADATA_COLUMNS[:5]),
        )
        self._closed = False

    def write(self, row: Mapping[str, Any]) -> None:
        self._pending.append(row)
        if len(self._pending) >= self.rows_per_group:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        table = rows_table(self._pending)
        self._writer.write_table(table, row_group_size=len(self._pending))
        self.info.rows += table.num_rows
        self.info.row_groups.append(table.num_rows)
        self._pending = []

    def close(self) -> ShardInfo:
        """Write the last row group and the footer, and publish the file."""
        if self._closed:
            return self.info
        self._flush()
        self._writer.close()
        self._handle.close()
        self._closed = True
        if self._target != self._final:
            self._fs.mv(self._target, self._final)
        self.info.bytes = int(self._fs.size(self._final))
        return self.info

    def abort(self) -> None:
        """Drop what was written: no file appears (the upload or the temporary file is discarded)."""
        if self._closed:
            return
        self._closed = True
        remote = isinstance(self._handle, AbstractBufferedFile)
        if remote:  # S3 and other buffered remote files: abort the upload, nothing is published
            self._handle.discard()
            self._handle.closed = True
        try:
            self._writer.close()  # on a discarded remote file the footer write fails: that is the point
        except (OSError, ValueError, AttributeError):
            pass
        finally:
            self._writer.is_open = False
        if not remote:  # local temporary file, or in-memory file published on close: remove it
            self._handle.close()
            if self._fs.exists(self._target):
                self._fs.rm(self._target)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def shard_info(url: str) -> ShardInfo:
    """Rows per row group of an existing shard, from its footer (no data read)."""
    fs, path = storage.pyarrow_filesystem(url)
    with fs.open_input_file(path) as handle:
        metadata = pq.ParquetFile(handle).metadata
        groups = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
        size = handle.size()
    return ShardInfo(url, sum(groups), groups, int(size))


def check_schema(schema: pa.Schema, url: str = "<shard>") -> None:
    """Raise when a file's schema is not ``TRIPLET_SCHEMA`` (names and types)."""
    expected = [(f.name, f.type) for f in TRIPLET_SCHEMA]
    found = [(f.name, f.type) for f in schema]
    if found != expected:
        raise ValueError(f"{url} is not a triplet shard of schema version {SCHEMA_VERSION}: fields {[n for n, _ in found]}")
