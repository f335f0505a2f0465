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

import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image
from prefect import task
from prefect.cache_policies import NO_CACHE

from ssh_model import storage
from ssh_model.images import decode_image, decode_mask
from ssh_model.lut import LUT, lut_bank, read_cube_folder
from ssh_model.lut_generator import STRENGTH_DISTRIBUTIONS
from ssh_model.settings import get_settings
from ssh_model.shards import (
    LOSSLESS_ENCODINGS,
    SCHEMA_VERSION,
    ShardWriter,
    schema_doc,
    shard_info,
    triplet_row,
)
from ssh_model.triplets import draw_layout, draw_luts, make_triplet
from tasks.common import forwarded_env, ray_init, run_logger
from tasks.ingest import MANIFEST_SCHEMA, images_url, read_table

BUILD_MARKER = "manifest.json"
BUILD_PARAMS = "_build.json"
GENERATOR_PREFIX = "generator:"
DEFAULT_LUT_COUNT = 100
SPLITS = ("train", "val", "test")
OUTLINE_SIDE = 160  # object masks are kept at most this size: they shape 2 x crop-size scenes


class VersionConflict(RuntimeError):
    """A complete version exists with other parameters (pick a new version, or overwrite)."""


# -- LUT bank ---------------------------------------------------------------------------------------

def default_lut_spec(seed: int | None = None) -> str:
    return f"{GENERATOR_PREFIX}{get_settings().seed if seed is None else seed}"


def load_lut_bank(spec: str, lut_size: int) -> list[LUT]:
    """``generator:SEED[:COUNT[:STRENGTHS]]`` (the seeded generator, COUNT grades, default 100, at strengths
    drawn from STRENGTHS: full (the default), mixed or mild; ``lut_bank``) or a .cube folder URL."""
    if spec.startswith(GENERATOR_PREFIX):
        expected = f"expected generator:SEED[:COUNT[:STRENGTHS]] with STRENGTHS one of {STRENGTH_DISTRIBUTIONS}"
        parts = spec[len(GENERATOR_PREFIX):].split(":")
        try:
            seed = int(parts[0])
            count = int(parts[1]) if len(parts) > 1 else DEFAULT_LUT_COUNT
        except (ValueError, IndexError) as err:
            raise ValueError(f"bad LUT spec {spec!r}; {expected}, or a URL") from err
        distribution = parts[2] if len(parts) > 2 else "full"
        if len(parts) > 3 or count < 2 or seed < 0 or distribution not in STRENGTH_DISTRIBUTIONS:
            raise ValueError(f"bad LUT spec {spec!r}; {expected}, SEED >= 0, COUNT >= 2")
        return lut_bank(seed, count=count, size=lut_size, distribution=distribution)
    bank = read_cube_folder(spec)
    if len(bank) < 2:
        raise ValueError(f"{spec} holds {len(bank)} .cube file(s); a triplet needs two different LUTs")
    return bank


def load_outlines(url: str, max_side: int = OUTLINE_SIDE) -> list[np.ndarray]:
    """The object masks (``*.png``, any depth) under the folder ``url`` as hard bool masks, sorted by path,
    each shrunk to ``max_side`` (the outline is all a region triplet takes from it)."""
    fs, root = storage.filesystem(url)
    paths = sorted(p for p in fs.find(root) if p.lower().endswith(".png"))
    if not paths:
        raise FileNotFoundError(f"no object masks (*.png) under {url}")
    outlines = []
    for path in paths:
        mask = Image.fromarray((decode_mask(fs.cat_file(path), path) >= 0.5).astype(np.uint8) * 255)
        mask.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
        outlines.append(np.asarray(mask) >= 128)
    return outlines


def outlines_digest(outlines: Sequence[np.ndarray]) -> str:
    digest = hashlib.sha256()
    for outline in outlines:
        digest.update(np.packbits(outline).tobytes() + str(outline.shape).encode())
    return digest.hexdigest()


def lut_bank_digest(bank: Sequence[LUT]) -> str:
    """sha256 over the LUT names and tables: identifies the bank a version was built with."""
    digest = hashlib.sha256()
    for lut in bank:
        digest.update(lut.name.encode() + b"\0")
        digest.update(np.ascontiguousarray(lut.table, np.float32).tobytes())
    return digest.hexdigest()


# -- plans ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ShardPlan:
    """One shard to build: its photos (sorted by id) and where it goes inside the version."""

    split: str
    index: int
    image_ids: tuple[str, ...]
    blobs: tuple[str, ...]

    @property
    def path(self) -> str:
        return f"{self.split}/part-{self.index:05d}.parquet"

    def as_item(self) -> dict[str, Any]:
        return {"split": self.split, "index": self.index, "image_ids": list(self.image_ids),
                "blobs": list(self.blobs)}


def plan_shards(manifest: pa.Table, images_per_shard: int) -> list[ShardPlan]:
    """Cut each split's photos (sorted by id) into shards of ``images_per_shard`` photos."""
    if images_per_shard < 1:
        raise ValueError(f"images_per_shard must be at least 1, got {images_per_shard}")
    rows = sorted(manifest.select(["id", "split", "blob"]).to_pylist(), key=lambda r: r["id"])
    plans = []
    for split in sorted({r["split"] for r in rows}):
        chosen = [r for r in rows if r["split"] == split]
        for index, start in enumerate(range(0, len(chosen), images_per_shard)):
            part = chosen[start:start + images_per_shard]
            ids, blobs = tuple(r["id"] for r in part), tuple(r["blob"] for r in part)
            plans.append(ShardPlan(split, index, ids, blobs))
    return plans


def triplet_rng(seed: int, image_id: str, k: int) -> np.random.Generator:
    """The generator of triplet ``k`` of photo ``image_id``: independent of where and when it runs."""
    return np.random.default_rng([seed, int(image_id[:15], 16), k])


@dataclass(frozen=True)
class BuildParams:
    """Everything a version's bytes depend on (and its layout); recorded in ``_build.json`` and the marker."""

    luts: str
    lut_size: int
    lut_bank_sha256: str
    image_manifest_sha256: str
    per_image: int
    crop_size: int
    seed: int
    encoding: str
    rows_per_group: int
    images_per_shard: int
    region_fraction: float = 0.0  # the share of triplets in the "region" layout (ssh_model.triplets)
    schema_version: str = SCHEMA_VERSION
    natural_fraction: float = 0.0  # the share of triplets whose second grade is the identity (draw_luts)
    masks: str = ""  # a folder URL of object masks (*.png) whose outlines shape region triplets ("": blobs)
    masks_sha256: str = ""  # of the outlines as loaded (load_outlines)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- one shard --------------------------------------------------------------------------------------

def build_shard(plan: ShardPlan, bank: Sequence[LUT], params: BuildParams, data_root: str,
                version_root: str, max_pixels: int, outlines: Sequence[np.ndarray] = ()) -> dict[str, Any]:
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
                triplet = make_triplet(image, lut_a, lut_b, rng, crop_size=params.crop_size, layout=layout,
                                       outline=outline)
                writer.write(triplet_row(triplet, image_id=image_id, split=plan.split, k=k, seed=params.seed,
                                         encoding=params.encoding))
    info = writer.info
    return {"path": plan.path, "split": plan.split, "images": len(plan.image_ids), "rows": info.rows,
            "row_groups": list(info.row_groups), "bytes": info.bytes,
            "seconds": round(time.monotonic() - started, 3),
            "cpu_seconds": round(time.process_time() - cpu_started, 3)}


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
            plan = ShardPlan(item["split"], int(item["index"]), tuple(item["image_ids"]),
                             tuple(item["blobs"]))
            entries.append(build_shard(plan, self.bank, self.params, self.data_root, self.version_root,
                                       self.max_pixels, self.outlines))
        return pa.Table.from_pylist(entries, schema=SHARD_ENTRY_SCHEMA)


SHARD_ENTRY_SCHEMA = pa.schema([
    ("path", pa.string()), ("split", pa.string()), ("images", pa.int64()), ("rows", pa.int64()),
    ("row_groups", pa.list_(pa.int64())), ("bytes", pa.int64()), ("seconds", pa.float64()),
    ("cpu_seconds", pa.float64()),
])


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
    return sorted(p[len(root):] for p in fs.find(path) if p.startswith(root))


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


def prepare_version(version_root: str, params: BuildParams, plans: Sequence[ShardPlan],
                    overwrite: bool) -> Preparation:
    """Decide what to build: nothing (complete), or the missing shards after cleaning up leftovers."""
    log = run_logger()
    marker = read_json(storage.join(version_root, BUILD_MARKER))
    if marker is not None:
        if marker.get("params") == params.as_dict() and not overwrite:
            return Preparation(complete=marker)
        if not overwrite:
            changed = sorted(k for k, v in params.as_dict().items() if marker.get("params", {}).get(k) != v)
            raise VersionConflict(f"{version_root} is complete with other parameters ({', '.join(changed)} "
                                  f"differ); choose a new version or pass overwrite=True")
        log.info("overwrite: removing the complete version %s", version_root)
        fs, path = storage.filesystem(storage.join(version_root, BUILD_MARKER))
        fs.rm(path)  # first: an interrupted rebuild must never look complete
    previous = read_json(storage.join(version_root, BUILD_PARAMS))
    files = _files_under(version_root)
    if overwrite or previous != params.as_dict():
        if files:
            log.info("removing %d files of an earlier or interrupted build under %s", len(files),
                     version_root)
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
            prepared.kept.append({"path": path, "split": plan.split, "images": len(plan.image_ids),
                                  "rows": info.rows, "row_groups": info.row_groups, "bytes": info.bytes,
                                  "seconds": 0.0, "cpu_seconds": 0.0})
            continue
        log.info("removing leftover %s", url)
        fs, inner = storage.filesystem(url)
        fs.rm(inner)
    done = {entry["path"] for entry in prepared.kept}
    prepared.todo = [plan for plan in plans if plan.path not in done]
    log.info("resuming %s: %d shards kept, %d to build", version_root, len(prepared.kept), len(prepared.todo))
    return prepared


def run_shard_builders(plans: Sequence[ShardPlan], params: BuildParams, data_root: str, version_root: str,
                       num_cpus: int | None = None) -> list[dict[str, Any]]:
    """Build ``plans`` on Ray Data (one actor per CPU, at most one per shard); returns their file entries."""
    import ray

    log = run_logger()
    if not plans:
        return []
    ray_init(num_cpus=num_cpus)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    actors = max(1, min(len(plans), cpus if num_cpus is None else min(num_cpus, cpus)))
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = True
    dataset = ray.data.from_items([plan.as_item() for plan in plans], override_num_blocks=len(plans))
    dataset = dataset.map_batches(
        ShardBuilder, batch_size=1, batch_format="pyarrow", num_cpus=1,
        compute=ray.data.ActorPoolStrategy(size=actors),
        fn_constructor_kwargs={"params": params.as_dict(), "data_root": data_root,
                               "version_root": version_root, "max_pixels": get_settings().max_image_pixels},
        runtime_env={"env_vars": forwarded_env()},
    )
    started = time.monotonic()
    entries: list[dict[str, Any]] = []
    rows = 0
    for row in dataset.iter_rows():
        entry = {"path": str(row["path"]), "split": str(row["split"]), "images": int(row["images"]),
                 "rows": int(row["rows"]), "row_groups": [int(n) for n in row["row_groups"]],
                 "bytes": int(row["bytes"]), "seconds": float(row["seconds"]),
                 "cpu_seconds": float(row["cpu_seconds"])}
        elapsed = time.monotonic() - started
        entry["finished_s"] = round(elapsed, 3)  # since the job started (for throughput measurements)
        entries.append(entry)
        rows += int(entry["rows"])
        log.info("shard %s: %d triplets in %.1fs; %d/%d shards, %d triplets, %.1f triplets/s", entry["path"],
                 entry["rows"], entry["seconds"], len(entries), len(plans), rows, rows / max(elapsed, 1e-6))
    return entries


def marker_payload(version: str, params: BuildParams, entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The completion marker: parameters, counts per split, every file, the schema."""
    files = sorted(({k: e[k] for k in ("path", "split", "images", "rows", "row_groups", "bytes")}
                    for e in entries), key=lambda e: e["path"])
    counts: dict[str, dict[str, int]] = {}
    for entry in files:
        split = counts.setdefault(entry["split"], {"files": 0, "images": 0, "triplets": 0, "bytes": 0})
        split["files"] += 1
        split["images"] += entry["images"]
        split["triplets"] += entry["rows"]
        split["bytes"] += entry["bytes"]
    triplets = sum(c["triplets"] for c in counts.values())
    total_bytes = sum(c["bytes"] for c in counts.values())
    return {"kind": "ssh-triplets", "version": version, "params": params.as_dict(), "counts": counts,
            "triplets": triplets, "bytes": total_bytes,
            "bytes_per_triplet": math.ceil(total_bytes / triplets) if triplets else 0,
            "files": files, "schema": schema_doc()}


def image_manifest(data_root: str) -> tuple[pa.Table, str]:
    """The image manifest table and the sha256 of its file."""
    url = images_url(data_root, "manifest.parquet")
    if not storage.exists(url):
        raise FileNotFoundError(f"no image manifest at {url}: run the ingest-images flow first")
    data = storage.read_bytes(url)
    return read_table(url, MANIFEST_SCHEMA), hashlib.sha256(data).hexdigest()


def check_build_arguments(per_image: int, crop_size: int, seed: int, encoding: str, rows_per_group: int,
                          triplets_per_shard: int, region_fraction: float = 0.0, natural_fraction: float = 0.0) -> None:
    problems = []
    for name, value in (("region_fraction", region_fraction), ("natural_fraction", natural_fraction)):
        if not 0.0 <= value <= 1.0:
            problems.append(f"{name} must be between 0 and 1, got {value}")
    if per_image < 1:
        problems.append(f"per_image must be at least 1, got {per_image}")
    if crop_size < 16:
        problems.append(f"crop_size must be at least 16, got {crop_size}")
    if seed < 0:
        problems.append(f"seed must be >= 0, got {seed}")
    if encoding not in LOSSLESS_ENCODINGS:
        problems.append(f"encoding must be one of the lossless {LOSSLESS_ENCODINGS}, got {encoding!r}")
    if rows_per_group < 1:
        problems.append(f"rows_per_group must be at least 1, got {rows_per_group}")
    if triplets_per_shard < 1:
        problems.append(f"triplets_per_shard must be at least 1, got {triplets_per_shard}")
    if problems:
        raise ValueError("; ".join(problems))


# -- Prefect tasks ----------------------------------------------------------------------------------

@task(name="plan-triplet-build", cache_policy=NO_CACHE)
def plan_build(data_root: str, version: str, luts: str, per_image: int, crop_size: int, seed: int,
               encoding: str, rows_per_group: int, triplets_per_shard: int,
               overwrite: bool, region_fraction: float = 0.0, masks: str | None = None,
               natural_fraction: float = 0.0) -> tuple[BuildParams, Preparation]:
    """Read the image manifest and the LUT bank, fix the parameters, and clean or resume the version."""
    log = run_logger()
    check_build_arguments(per_image, crop_size, seed, encoding, rows_per_group, triplets_per_shard,
                          region_fraction, natural_fraction)
    settings = get_settings()
    manifest, manifest_sha = image_manifest(data_root)
    if manifest.num_rows == 0:
        raise ValueError(f"the image manifest under {data_root} is empty: ingest some photos first")
    bank = load_lut_bank(luts, settings.lut_size)
    outlines = load_outlines(masks) if masks else []
    params = BuildParams(luts=luts, lut_size=settings.lut_size, lut_bank_sha256=lut_bank_digest(bank),
                         image_manifest_sha256=manifest_sha, per_image=per_image, crop_size=crop_size,
                         seed=seed, encoding=encoding, rows_per_group=rows_per_group,
                         images_per_shard=max(1, triplets_per_shard // per_image),
                         region_fraction=float(region_fraction), natural_fraction=float(natural_fraction),
                         masks=masks or "",
                         masks_sha256=outlines_digest(outlines) if outlines else "")
    plans = plan_shards(manifest, params.images_per_shard)
    log.info("%d photos, %d LUTs (%s), %d triplets per photo at %d px (%.0f%% region layout, %s; %.0f%% with a "
             "natural reference) -> %d shards", manifest.num_rows, len(bank), luts, per_image, crop_size,
             100 * region_fraction, f"{len(outlines)} object outlines" if outlines else "blob regions",
             100 * natural_fraction, len(plans))
    return params, prepare_version(version_root_of(data_root, version), params, plans, overwrite)


@task(name="generate-triplet-shards", cache_policy=NO_CACHE)
def generate_shards(plans: Sequence[ShardPlan], params: BuildParams, data_root: str, version: str,
                    num_cpus: int | None = None) -> list[dict[str, Any]]:
    """Make and write the shards of ``plans`` on Ray (local cores, or the cluster at RAY_ADDRESS)."""
    return run_shard_builders(plans, params, data_root, version_root_of(data_root, version), num_cpus)


@task(name="publish-triplet-version", cache_policy=NO_CACHE)
def publish_version(data_root: str, version: str, params: BuildParams,
                    entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Check every planned shard exists, then write the completion marker (last)."""
    root = version_root_of(data_root, version)
    payload = marker_payload(version, params, entries)
    for entry in payload["files"]:
        if not storage.exists(storage.join(root, entry["path"])):
            raise RuntimeError(f"shard {entry['path']} is missing under {root}; the version is not complete")
    write_json(storage.join(root, BUILD_MARKER), payload)
    run_logger().info("version %s complete: %d triplets in %d files (%s), %d bytes per triplet", root,
                      payload["triplets"], len(payload["files"]),
                      ", ".join(f"{k} {v['triplets']}" for k, v in sorted(payload["counts"].items())),
                      payload["bytes_per_triplet"])
    return payload
