"""Build a version of triplet shards from the image manifest with Ray Data.

Layout of a version (any fsspec URL; S3 goes through s3fs with our endpoint setting):

    {data_root}/triplets/{version}/_build.json                  the parameters of the build in progress
    {data_root}/triplets/{version}/{split}/part-{NNNNN}.parquet  shards (schema: ssh_model.shards)
    {data_root}/triplets/{version}/manifest.json                 written last: the version is complete

How the work is cut: the manifest's photos are sorted by id within each split and cut into shards
of ``images_per_shard`` photos; a shard's name, photos and content are a pure function of the
inputs. Ray Data maps a callable class over the shard plans (``map_batches``, one plan per call):
each actor builds the LUT bank once, then for each photo of its shard makes ``per_image``
triplets with ``make_triplet`` and writes the shard itself, streaming row groups of
``rows_per_group`` rows. Triplet ``k`` of photo ``id`` draws everything (its two LUTs, its layout
when ``region_fraction`` > 0, crops and flips) from ``default_rng([seed, int(id[:15], 16), k])``,
so the same manifest, LUT bank and seed give the same bytes, whatever the number of workers or the
order they run in. (Ray Data's own ``write_parquet`` names files by block and task, which would
break this, so shards are written by the map function.)

Completion and crashes: ``manifest.json`` (counts, parameters, the schema, every file with its
row groups, which the reader uses instead of listing) is written only after every shard exists.
A shard appears complete or not at all (``ShardWriter``). A re-run of a version without the marker
keeps the shards of a build with the same parameters (checked against their footers), removes
anything else under the version (temporary files, shards of other parameters) and builds the
missing ones; a complete version re-run with the same parameters is a no-op; with other
parameters it fails unless ``overwrite`` (which deletes the marker first, then the shards).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.ingest import images_url
from pipeline.ray_runtime import forwarded_env, ray_init
from pipeline.triplet_plan import BuildParams, ShardPlan, load_lut_bank, load_outlines, triplet_rng
from ssh_model import storage
from ssh_model.images import decode_image
from ssh_model.lut import LUT
from ssh_model.progress import progress_line
from ssh_model.settings import get_settings
from ssh_model.shards import (
    ShardWriter,
    schema_doc,
    shard_info,
    triplet_row,
)
from ssh_model.triplets import draw_layout, draw_luts, make_triplet

logger = logging.getLogger(__name__)

BUILD_MARKER = "manifest.json"
BUILD_PARAMS = "_build.json"


class VersionConflict(RuntimeError):
    """A complete version exists with other parameters (pick a new version, or overwrite)."""


def build_shard(
    plan: ShardPlan,
    bank: Sequence[LUT],
    params: BuildParams,
    data_root: str,
    version_root: str,
    max_pixels: int,
    outlines: Sequence[np.ndarray] = (),
) -> dict[str, Any]:
    """Make ``per_image`` triplets for each photo of ``plan`` and write its shard; returns the file entry."""
    started, cpu_started = time.monotonic(), time.process_time()
    url = storage.join(version_root, plan.path)
    with ShardWriter(url, params.rows_per_group, params.encoding) as writer:
        for image_id, blob in zip(plan.image_ids, plan.blobs, strict=True):
            image = decode_image(storage.read_bytes(images_url(data_root, blob)), blob, max_pixels=max_pixels)
            for k in range(params.per_image):
                rng = triplet_rng(params.seed, image_id, k)
                lut_a, lut_b = draw_luts(rng, bank, params.natural_fraction)
                layout = draw_layout(rng, params.region_fraction)
                outline = outlines[int(rng.integers(len(outlines)))] if layout == "region" and outlines else None
                triplet = make_triplet(image, lut_a, lut_b, rng, crop_size=params.crop_size, layout=layout, outline=outline)
                writer.write(
                    triplet_row(
                        triplet, image_id=image_id, split=plan.split, k=k, seed=params.seed, encoding=params.encoding
                    )
                )
    return shard_entry(plan, writer.info, seconds=time.monotonic() - started, cpu_seconds=time.process_time() - cpu_started)


def shard_entry(plan: ShardPlan, info: Any, seconds: float = 0.0, cpu_seconds: float = 0.0) -> dict[str, Any]:
    """A shard's entry in the build (and, less the timings, in the version's manifest): what ``plan`` made,
    as its file's footer (``ssh_model.shards.shard_info``) or its writer says."""
    return {
        "path": plan.path,
        "split": plan.split,
        "images": len(plan.image_ids),
        "rows": int(info.rows),
        "row_groups": [int(n) for n in info.row_groups],
        "bytes": int(info.bytes),
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu_seconds, 3),
    }


class ShardBuilder:
    """The Ray Data map function: builds the LUT bank once per actor, then one shard per row of a batch.

    Args:
        params: the build parameters (as a dict, to cross process boundaries cheaply).
        data_root: where ``images/`` lives.
        version_root: where the version's shards go.
        max_pixels: decompression-bomb limit when decoding photos.
    """

    def __init__(self, params: dict[str, Any], data_root: str, version_root: str, max_pixels: int) -> None:
        self.params = BuildParams(**params)
        self.bank = load_lut_bank(self.params.luts, self.params.lut_size)
        self.outlines = load_outlines(self.params.masks) if self.params.masks else []
        self.data_root, self.version_root, self.max_pixels = data_root, version_root, max_pixels

    def __call__(self, batch: pa.Table) -> pa.Table:
        entries = []
        for item in batch.to_pylist():
            plan = ShardPlan(item["split"], int(item["index"]), tuple(item["image_ids"]), tuple(item["blobs"]))
            entries.append(
                build_shard(plan, self.bank, self.params, self.data_root, self.version_root, self.max_pixels, self.outlines)
            )
        return pa.Table.from_pylist(entries, schema=SHARD_ENTRY_SCHEMA)


SHARD_ENTRY_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("split", pa.string()),
        ("images", pa.int64()),
        ("rows", pa.int64()),
        ("row_groups", pa.list_(pa.int64())),
        ("bytes", pa.int64()),
        ("seconds", pa.float64()),
        ("cpu_seconds", pa.float64()),
    ]
)


# -- the version ------------------------------------------------------------------------------------


def version_root_of(data_root: str, version: str) -> str:
    if not version or "/" in version or version.startswith((".", "_")):
        raise ValueError(f"bad version name {version!r}: one path segment, not starting with '.' or '_'")
    return storage.join(data_root, "triplets", version)


def read_json(url: str) -> dict | None:
    return json.loads(storage.read_bytes(url)) if storage.exists(url) else None


def write_json(url: str, payload: dict) -> None:
    storage.write_bytes_atomic(url, (json.dumps(payload, indent=1, sort_keys=True) + "\n").encode())


def remove_tree(url: str) -> None:
    fs, path = storage.filesystem(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)
    fs.invalidate_cache()


def _files_under(url: str) -> list[str]:
    """Paths (relative to ``url``) of every file under it, hidden and temporary ones included."""
    fs, path = storage.filesystem(url)
    fs.invalidate_cache()
    if not fs.exists(path):
        return []
    root = path.rstrip("/") + "/"
    return sorted(p[len(root) :] for p in fs.find(path) if p.startswith(root))


@dataclass
class Preparation:
    """What is left to do for a version: ``complete`` (the marker), or the shards kept and still to build."""

    complete: dict | None = None
    kept: list[dict[str, Any]] = field(default_factory=list)
    todo: list[ShardPlan] = field(default_factory=list)


def expected_groups(plan: ShardPlan, params: BuildParams) -> list[int]:
    rows = len(plan.image_ids) * params.per_image
    full, rest = divmod(rows, params.rows_per_group)
    return [params.rows_per_group] * full + ([rest] if rest else [])


def prepare_version(
    version_root: str,
    params: BuildParams,
    plans: Sequence[ShardPlan],
    overwrite: bool,
    log: logging.Logger | logging.LoggerAdapter | None = None,
) -> Preparation:
    """Decide what to build: nothing (complete), or the missing shards after cleaning up leftovers."""
    log = log or logger
    marker = read_json(storage.join(version_root, BUILD_MARKER))
    if marker is not None:
        if marker.get("params") == params.as_dict() and not overwrite:
            return Preparation(complete=marker)
        if not overwrite:
            changed = sorted(k for k, v in params.as_dict().items() if marker.get("params", {}).get(k) != v)
            raise VersionConflict(
                f"{version_root} is complete with other parameters ({', '.join(changed)} "
                f"differ); choose a new version or pass overwrite=True"
            )
        log.info("overwrite: removing the complete version %s", version_root)
        fs, path = storage.filesystem(storage.join(version_root, BUILD_MARKER))
        fs.rm(path)  # first: an interrupted rebuild must never look complete
    previous = read_json(storage.join(version_root, BUILD_PARAMS))
    files = _files_under(version_root)
    if overwrite or previous != params.as_dict():
        if files:
            log.info("removing %d files of an earlier or interrupted build under %s", len(files), version_root)
            remove_tree(version_root)
        write_json(storage.join(version_root, BUILD_PARAMS), params.as_dict())
        return Preparation(todo=list(plans))
    by_path = {plan.path: plan for plan in plans}
    prepared = Preparation()
    for path in files:
        if path == BUILD_PARAMS:
            continue
        plan = by_path.get(path)
        url = storage.join(version_root, path)
        try:
            info = shard_info(url) if plan is not None else None
        except (OSError, ValueError):  # not a readable Parquet file (ArrowInvalid is a ValueError)
            info = None
        if plan is not None and info is not None and info.row_groups == expected_groups(plan, params):
            prepared.kept.append(shard_entry(plan, info))
            continue
        log.info("removing leftover %s", url)
        fs, inner = storage.filesystem(url)
        fs.rm(inner)
    done = {entry["path"] for entry in prepared.kept}
    prepared.todo = [plan for plan in plans if plan.path not in done]
    log.info("resuming %s: %d shards kept, %d to build", version_root, len(prepared.kept), len(prepared.todo))
    return prepared


def run_shard_builders(
    plans: Sequence[ShardPlan],
    params: BuildParams,
    data_root: str,
    version_root: str,
    num_cpus: int | None = None,
    log: logging.Logger | logging.LoggerAdapter | None = None,
) -> list[dict[str, Any]]:
    """Build ``plans`` on Ray Data (one actor per CPU, at most one per shard); returns their file entries."""
    import ray

    log = log or logger
    if not plans:
        return []
    ray_init(num_cpus=num_cpus)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    actors = max(1, min(len(plans), cpus if num_cpus is None else min(num_cpus, cpus)))
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = True
    dataset = ray.data.from_items([plan.as_item() for plan in plans], override_num_blocks=len(plans))
    dataset = dataset.map_batches(
        ShardBuilder,
        batch_size=1,
        batch_format="pyarrow",
        num_cpus=1,
        compute=ray.data.ActorPoolStrategy(size=actors),
        fn_constructor_kwargs={
            "params": params.as_dict(),
            "data_root": data_root,
            "version_root": version_root,
            "max_pixels": get_settings().max_image_pixels,
        },
        runtime_env={"env_vars": forwarded_env()},
    )
    started = time.monotonic()
    entries: list[dict[str, Any]] = []
    rows = 0
    for row in dataset.iter_rows():
        entry = {
            "path": str(row["path"]),
            "split": str(row["split"]),
            "images": int(row["images"]),
            "rows": int(row["rows"]),
            "row_groups": [int(n) for n in row["row_groups"]],
            "bytes": int(row["bytes"]),
            "seconds": float(row["seconds"]),
            "cpu_seconds": float(row["cpu_seconds"]),
        }
        elapsed = time.monotonic() - started
        entry["finished_s"] = round(elapsed, 3)  # since the job started (for throughput measurements)
        entries.append(entry)
        rows += int(entry["rows"])
        log.info(
            "shard %s: %d triplets in %.1fs; %s, %d triplets (%.1f triplets/s)",
            entry["path"],
            entry["rows"],
            entry["seconds"],
            progress_line(len(entries), len(plans), elapsed, "shards"),
            rows,
            rows / max(elapsed, 1e-6),
        )
    return entries


def marker_payload(version: str, params: BuildParams, entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The completion marker: parameters, counts per split, every file, the schema."""
    files = sorted(
        ({k: e[k] for k in ("path", "split", "images", "rows", "row_groups", "bytes")} for e in entries),
        key=lambda e: e["path"],
    )
    counts: dict[str, dict[str, int]] = {}
    for entry in files:
        split = counts.setdefault(entry["split"], {"files": 0, "images": 0, "triplets": 0, "bytes": 0})
        split["files"] += 1
        split["images"] += entry["images"]
        split["triplets"] += entry["rows"]
        split["bytes"] += entry["bytes"]
    triplets = sum(c["triplets"] for c in counts.values())
    total_bytes = sum(c["bytes"] for c in counts.values())
    return {
        "kind": "ssh-triplets",
        "version": version,
        "params": params.as_dict(),
        "counts": counts,
        "triplets": triplets,
        "bytes": total_bytes,
        "bytes_per_triplet": math.ceil(total_bytes / triplets) if triplets else 0,
        "files": files,
        "schema": schema_doc(),
    }
