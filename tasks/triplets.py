"""The Prefect tasks of build-triplets: plan (and clean or resume), generate the shards on Ray, publish.

The work itself is ``pipeline.triplets``; these wrappers add the task names the UI shows and log
through Prefect's run logger.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from pipeline.triplet_plan import (
    BuildParams,
    ShardPlan,
    check_build_arguments,
    image_manifest,
    load_lut_bank,
    load_outlines,
    lut_bank_digest,
    outlines_digest,
    plan_shards,
)
from pipeline.triplets import (
    BUILD_MARKER,
    Preparation,
    marker_payload,
    prepare_version,
    run_shard_builders,
    version_root_of,
    write_json,
)
from ssh_model import storage
from ssh_model.settings import get_settings
from tasks.common import run_logger


@task(name="plan-triplet-build", cache_policy=NO_CACHE)
def plan_build(
    data_root: str,
    version: str,
    luts: str,
    per_image: int,
    crop_size: int,
    seed: int,
    encoding: str,
    rows_per_group: int,
    triplets_per_shard: int,
    overwrite: bool,
    region_fraction: float = 0.0,
    masks: str | None = None,
    natural_fraction: float = 0.0,
) -> tuple[BuildParams, Preparation]:
    """Read the image manifest and the LUT bank, fix the parameters, and clean or resume the version."""
    log = run_logger()
    check_build_arguments(
        per_image, crop_size, seed, encoding, rows_per_group, triplets_per_shard, region_fraction, natural_fraction
    )
    settings = get_settings()
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
        encoding=encoding,
        rows_per_group=rows_per_group,
        images_per_shard=max(1, triplets_per_shard // per_image),
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
    return params, prepare_version(version_root_of(data_root, version), params, plans, overwrite, log=log)


@task(name="generate-triplet-shards", cache_policy=NO_CACHE)
def generate_shards(
    plans: Sequence[ShardPlan], params: BuildParams, data_root: str, version: str, num_cpus: int | None = None
) -> list[dict[str, Any]]:
    """Make and write the shards of ``plans`` on Ray (local cores, or the cluster at RAY_ADDRESS)."""
    return run_shard_builders(plans, params, data_root, version_root_of(data_root, version), num_cpus, log=run_logger())


@task(name="publish-triplet-version", cache_policy=NO_CACHE)
def publish_version(data_root: str, version: str, params: BuildParams, entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Check every planned shard exists, then write the completion marker (last)."""
    root = version_root_of(data_root, version)
    payload = marker_payload(version, params, entries)
    for entry in payload["files"]:
        if not storage.exists(storage.join(root, entry["path"])):
            raise RuntimeError(f"shard {entry['path']} is missing under {root}; the version is not complete")
    write_json(storage.join(root, BUILD_MARKER), payload)
    run_logger().info(
        "version %s complete: %d triplets in %d files (%s), %d bytes per triplet",
        root,
        payload["triplets"],
        len(payload["files"]),
        ", ".join(f"{k} {v['triplets']}" for k, v in sorted(payload["counts"].items())),
        payload["bytes_per_triplet"],
    )
    return payload
