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

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.configs import TripletConfig
from pipeline.ingest import images_url
from pipeline.ray_runtime import forwarded_env, ray_init
from pipeline.triplet_plan import (
    BuildParams,
    ShardPlan,
    check_build_arguments,
    default_lut_spec,
    image_manifest,
    load_lut_bank,
    load_outlines,
    lut_bank_digest,
    outlines_digest,
    plan_shards,
    triplet_rng,
)
from pipeline.triplet_versions import Preparation, prepare_version, shard_entry, version_root_of
from ssh_model import storage
from ssh_model.images import decode_image
from ssh_model.lut import LUT
from ssh_model.progress import progress_line
from ssh_model.settings import get_settings
from ssh_model.shards import (
    ShardWriter,
    triplet_row,
)
from ssh_model.triplets import draw_layout, draw_luts, make_triplet

logger = logging.getLogger(__name__)


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


def run_shard_builders(
    plans: Sequence[ShardPlan],
    params: BuildParams,
    data_root: str,
    version_root: str,
    num_cpus: int | None = None,
    log: logging.Logger | logging.LoggerAdapter | None = None,
) -> list[dict[str, Any]]:
    """Build ``plans`` on Ray Data (one actor per CPU, at most one per shard); returns their file entries."""
    import ray  # deferred: building shards in-process (tests, benchmarks) needs no Ray

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


def plan_build(
    data_root: str, version: str, config: TripletConfig, log: logging.Logger | logging.LoggerAdapter = logger
) -> tuple[BuildParams, Preparation]:
    """Read the image manifest and the LUT bank, fix the parameters (``config``'s run-time defaults from the
    settings), and clean or resume the version."""
    settings = get_settings()
    crop_size, seed = config.crop_and_seed(settings)
    luts = config.luts or default_lut_spec(seed)
    per_image, masks = config.per_image, config.masks
    region_fraction, natural_fraction = config.region_fraction, config.natural_fraction
    check_build_arguments(
        per_image,
        crop_size,
        seed,
        config.encoding,
        config.rows_per_group,
        config.triplets_per_shard,
        region_fraction,
        natural_fraction,
    )
    manifest, manifest_sha = image_manifest(data_root)
    if manifest.num_rows == 0:
        raise ValueError(f"the image manifest under {data_root} is empty: ingest some photos first")
    bank = load_lut_bank(luts, settings.lut_size)
    outlines = load_outlines(masks) if masks else []
    params = BuildParams(
        luts=luts,
        lut_size=settings.lut_size,
        lut_bank_sha256=lut_bank_digest(bank),
        image_manifest_sha256=manifest_sha,
        per_image=per_image,
        crop_size=crop_size,
        seed=seed,
        encoding=config.encoding,
        rows_per_group=config.rows_per_group,
        images_per_shard=max(1, config.triplets_per_shard // per_image),
        region_fraction=float(region_fraction),
        natural_fraction=float(natural_fraction),
        masks=masks or "",
        masks_sha256=outlines_digest(outlines) if outlines else "",
    )
    plans = plan_shards(manifest, params.images_per_shard)
    log.info(
        "%d photos, %d LUTs (%s), %d triplets per photo at %d px (%.0f%% region layout, %s; %.0f%% with a "
        "natural reference) -> %d shards",
        manifest.num_rows,
        len(bank),
        luts,
        per_image,
        crop_size,
        100 * region_fraction,
        f"{len(outlines)} object outlines" if outlines else "blob regions",
        100 * natural_fraction,
        len(plans),
    )
    return params, prepare_version(version_root_of(data_root, version), params, plans, config.overwrite, log=log)
