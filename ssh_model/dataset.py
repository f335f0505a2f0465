"""``TripletDataset``: stream triplet shards (``ssh_model.shards``) into training batches.

Work is split by row group (a "unit": one Parquet row group of one file, or a slice of one):

1. Up front, the units and their row counts come from the build's ``manifest.json`` (written by
   build-triplets when a version is complete) or, for plain files and folders, from the Parquet
   footers. Nothing else is read before iterating.
2. Each epoch the units are permuted with ``default_rng([seed, epoch])`` and laid end to end as one
   virtual stream of rows. Rank ``r`` of ``world_size`` takes the ``r``-th equal part of it, whole
   batches only with ``drop_last`` (every rank gets the same number of batches, known from the row
   counts alone: ``len(dataset)``); without ``drop_last`` the stream wraps around so every rank
   still gets ``ceil(rows / world_size)`` rows (the last batch is partial), as
   ``DistributedSampler`` does. A unit cut by a boundary is read by both sides, each its slice.
3. Within a rank, DataLoader worker ``w`` of ``W`` takes a contiguous run of the rank's batches,
   so each worker reads its own row groups. Rows are shuffled through a buffer seeded with
   ``(seed, epoch, rank, worker)``, then grouped into batches and decoded in the worker.

Batches are dicts: ``content_a``, ``reference_a``, ``reference_b``, ``content_b`` uint8
``(B, S, S, 3)`` (what ``ssh_model.train.batch_to_tensors`` takes) plus the metadata of
``shards.decode_batch`` (triplet ids, LUT names, boxes, ...). Use ``DataLoader(dataset,
batch_size=None, num_workers=N)``: the dataset batches itself. Call ``set_epoch(e)`` before each
epoch (with ``persistent_workers=False``, the default, workers see the new epoch).
"""

from __future__ import annotations

import json
import logging
import math
import posixpath
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ssh_model import storage
from ssh_model.shards import IMAGE_COLUMNS, check_schema, decode_batch, shard_info

logger = logging.getLogger(__name__)

BUILD_MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Unit:
    """Rows ``[start, stop)`` of row group ``row_group`` of the shard at ``url``."""

    url: str
    row_group: int
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


def _is_shard_name(path: str) -> bool:
    name = posixpath.basename(path)
    return name.endswith(".parquet") and not name.startswith((".", "_"))


def _list_shards(url: str) -> list[str]:
    fs, path = storage.filesystem(url)
    if fs.isfile(path):
        return [url]
    found = sorted(p for p in fs.find(path) if _is_shard_name(p))
    return [fs.unstrip_protocol(p) if "://" in url else p for p in found]


def _units_from_manifest(root: str, split: str | None) -> list[Unit] | None:
    manifest_url = storage.join(root, BUILD_MANIFEST)
    if not storage.exists(manifest_url):
        return None
    manifest = json.loads(storage.read_bytes(manifest_url))
    units = []
    for entry in sorted(manifest["files"], key=lambda e: e["path"]):
        if split is not None and entry["split"] != split:
            continue
        url = storage.join(root, entry["path"])
        units += [Unit(url, i, 0, rows) for i, rows in enumerate(entry["row_groups"]) if rows > 0]
    return units


def discover_units(source: str | Sequence[str], split: str | None = "train") -> list[Unit]:
    """The row groups of the shards named by ``source``, in a fixed order.

    ``source`` is a build root (``{data_root}/triplets/{version}``, read through its
    ``manifest.json`` and filtered by ``split``), a folder of ``.parquet`` shards (its ``{split}``
    subfolder when there is one), one shard URL, or a list of these.
    """
    if isinstance(source, str):
        from_manifest = _units_from_manifest(source, split)
        if from_manifest is not None:
            return from_manifest
        sources = [source]
    else:
        sources = list(source)
    urls: list[str] = []
    for url in sources:
        if split is not None and not url.endswith(".parquet") and storage.exists(storage.join(url, split)):
            url = storage.join(url, split)
        urls += _list_shards(url)
    if not urls:
        raise FileNotFoundError(f"no triplet shards (*.parquet) under {source!r} for split {split!r}")
    with ThreadPoolExecutor(max_workers=min(8, len(urls))) as pool:
        infos = list(pool.map(shard_info, urls))
    return [Unit(info.url, group, 0, rows) for info in infos for group, rows in enumerate(info.row_groups) if rows > 0]


def rows_per_rank(total_rows: int, batch_size: int, world_size: int, drop_last: bool) -> int:
    """Rows each rank reads per epoch."""
    if drop_last:
        return (total_rows // (world_size * batch_size)) * batch_size
    return math.ceil(total_rows / world_size)


def _slice_stream(units: Sequence[Unit], start: int, stop: int) -> list[Unit]:
    """Rows ``[start, stop)`` of the stream made by laying ``units`` end to end (wrapping around)."""
    starts = np.cumsum([0] + [u.rows for u in units])  # (len(units) + 1,)
    total = int(starts[-1])
    if total == 0:
        raise ValueError("no rows to read")
    out: list[Unit] = []
    position = start
    while position < stop:
        offset = position % total
        index = int(np.searchsorted(starts, offset, side="right")) - 1
        unit = units[index]
        lo = unit.start + offset - int(starts[index])
        take = min(unit.stop - lo, stop - position)
        out.append(Unit(unit.url, unit.row_group, lo, lo + take))
        position += take
    return out


def plan_epoch(
    units: Sequence[Unit],
    *,
    batch_size: int,
    epoch: int,
    seed: int,
    shuffle: bool,
    rank: int,
    world_size: int,
    worker: int,
    num_workers: int,
    drop_last: bool,
) -> tuple[list[Unit], int]:
    """The unit slices worker ``worker`` of rank ``rank`` reads this epoch, and its row count."""
    order = list(units)
    if shuffle:
        permutation = np.random.default_rng([seed, epoch]).permutation(len(order))
        order = [order[i] for i in permutation]
    total = sum(u.rows for u in order)
    per_rank = rows_per_rank(total, batch_size, world_size, drop_last)
    batches = math.ceil(per_rank / batch_size)
    first, last = worker * batches // num_workers, (worker + 1) * batches // num_workers
    lo = rank * per_rank + first * batch_size
    hi = rank * per_rank + min(last * batch_size, per_rank)
    return (_slice_stream(order, lo, hi) if hi > lo else []), max(0, hi - lo)


class TripletDataset(IterableDataset):
    """Batches of decoded triplets streamed from Parquet shards, split across DDP ranks and loader workers.

    Args:
        source: a build root (``{data_root}/triplets/{version}``), a folder of shards, a shard URL,
            or a list of these (any fsspec URLs).
        split: which split to read ("train", "val", "test"; None = every shard found).
        batch_size: triplets per batch.
        shuffle: permute row groups per epoch and rows through a buffer.
        seed: the shuffle seed (with the epoch: the same seed and epoch give the same order).
        rank, world_size: this process's place among DDP ranks (default: from ``torch.distributed``
            when it is initialised, else 0 of 1).
        drop_last: drop the rows that do not fill a whole batch on every rank (equal full batches).
        shuffle_buffer: rows held (encoded) for shuffling within a worker.
        columns: image columns to decode (default: all four).
    """

    def __init__(
        self,
        source: str | Sequence[str],
        split: str | None = "train",
        batch_size: int = 8,
        shuffle: bool = True,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = True,
        shuffle_buffer: int = 256,
        columns: Sequence[str] = IMAGE_COLUMNS,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        unknown = set(columns) - set(IMAGE_COLUMNS)
        if unknown:
            raise ValueError(f"unknown image columns {sorted(unknown)}; expected some of {IMAGE_COLUMNS}")
        self.source, self.split = source, split
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.drop_last, self.shuffle_buffer = drop_last, max(1, shuffle_buffer)
        self.columns = tuple(columns)
        self._rank, self._world_size = rank, world_size
        self.epoch = 0
        self.units = discover_units(source, split)
        self.total_rows = sum(u.rows for u in self.units)
        rank_, world = self.placement()
        if rows_per_rank(self.total_rows, batch_size, world, drop_last) == 0:
            raise ValueError(f"{self.total_rows} triplets cannot make one batch of {batch_size} on each of {world} ranks")
        logger.info(
            "TripletDataset: %d triplets in %d row groups (split %s), rank %d of %d, %d batches/epoch",
            self.total_rows,
            len(self.units),
            split,
            rank_,
            world,
            len(self),
        )

    def placement(self) -> tuple[int, int]:
        """(rank, world_size): the given ones, else torch.distributed's, else (0, 1)."""
        if self._rank is not None and self._world_size is not None:
            rank, world = self._rank, self._world_size
        elif torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        else:
            rank, world = 0, 1
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in [0, {world})")
        return rank, world

    def set_epoch(self, epoch: int) -> None:
        """Use the shuffle order of ``epoch`` (call before iterating each epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        """Batches this rank yields per epoch (all its loader workers together); the same on every rank."""
        _, world = self.placement()
        rows = rows_per_rank(self.total_rows, self.batch_size, world, self.drop_last)
        return math.ceil(rows / self.batch_size)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rank, world = self.placement()
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        slices, rows = plan_epoch(
            self.units,
            batch_size=self.batch_size,
            epoch=self.epoch,
            seed=self.seed,
            shuffle=self.shuffle,
            rank=rank,
            world_size=world,
            worker=worker,
            num_workers=num_workers,
            drop_last=self.drop_last,
        )
        rng = np.random.default_rng([self.seed, self.epoch, rank, worker])
        reader = _ShardReader()
        pending: list[pa.Table] = []
        for row in self._rows(slices, reader, rng):
            pending.append(row)
            if len(pending) == self.batch_size:
                yield decode_batch(pa.concat_tables(pending), self.columns)
                pending = []
        if pending:
            yield decode_batch(pa.concat_tables(pending), self.columns)

    def _rows(self, slices: list[Unit], reader: _ShardReader, rng: np.random.Generator) -> Iterator[pa.Table]:
        """One-row tables of the worker's slices, in order or through the shuffle buffer.

        Rows are copied out of their row group (``take``), so the buffer holds ``shuffle_buffer``
        encoded rows, not the row groups they came from.
        """
        buffer: list[pa.Table] = []
        for unit in slices:
            table = reader.read(unit)
            rows = [table.take([i]) for i in range(table.num_rows)]
            if not self.shuffle:
                yield from rows
                continue
            buffer += rows
            while len(buffer) >= self.shuffle_buffer:
                pick = int(rng.integers(len(buffer)))
                buffer[pick], buffer[-1] = buffer[-1], buffer[pick]
                yield buffer.pop()
        for index in rng.permutation(len(buffer)) if buffer else []:
            yield buffer[index]


class _ShardReader:
    """Opens each shard once per worker (after the fork) and reads row-group slices."""

    def __init__(self) -> None:
        self._files: dict[str, pq.ParquetFile] = {}

    def read(self, unit: Unit) -> pa.Table:
        handle = self._files.get(unit.url)
        if handle is None:
            fs, path = storage.pyarrow_filesystem(unit.url)
            handle = pq.ParquetFile(fs.open_input_file(path))
            check_schema(handle.schema_arrow, unit.url)
            self._files[unit.url] = handle
        table = handle.read_row_group(unit.row_group)
        if unit.start or unit.stop < table.num_rows:
            table = table.slice(unit.start, unit.stop - unit.start)
        return table
