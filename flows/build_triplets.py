"""Flow ``build-triplets``: the image manifest + a LUT bank + a seed -> a version of triplet shards.

    prefect deployment run build-triplets/default -p data_root=s3://bucket/ssh -p version=2026-11-25
    python -m flows.build_triplets --data-root s3://bucket/ssh --version v1 --per-image 16

Runs Ray Data on local cores (``ray.init()``), or unchanged on a cluster when ``RAY_ADDRESS`` is
set. Writes ``{data_root}/triplets/{version}/{split}/part-*.parquet`` and, last,
``{data_root}/triplets/{version}/manifest.json``. Same inputs and seed -> same bytes; an interrupted
build is completed by a re-run; a complete version re-run is a no-op. See ``pipeline.triplets``.
"""

from __future__ import annotations

import argparse
import json
import sys

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from pipeline.triplet_plan import default_lut_spec
from pipeline.triplet_versions import BUILD_MARKER, version_root_of
from ssh_model import storage
from ssh_model.settings import get_settings
from ssh_model.shards import DEFAULT_ENCODING, ROWS_PER_GROUP
from tasks.common import run_logger
from tasks.triplets import generate_shards, plan_build, publish_version


def summary_markdown(marker: dict, url: str, skipped: bool) -> str:
    params = marker["params"]
    lines = [
        "| | |",
        "|---|---|",
        f"| version | `{url}` |",
        f"| state | {'already complete (nothing built)' if skipped else 'built'} |",
        f"| triplets / bytes per triplet | {marker['triplets']} / {marker['bytes_per_triplet']} |",
        f"| LUTs | `{params['luts']}` |",
        f"| per image / crop / seed | {params['per_image']} / {params['crop_size']} / {params['seed']} |",
        f"| region layout | {params.get('region_fraction', 0.0):.0%} of the triplets, "
        f"{'object outlines from `' + params['masks'] + '`' if params.get('masks') else 'blob shapes'} |",
        f"| natural reference | {params.get('natural_fraction', 0.0):.0%} of the triplets |",
        f"| encoding | {params['encoding']} |",
    ]
    lines += [
        f"| split {name} | {c['images']} photos, {c['triplets']} triplets, {c['files']} files |"
        for name, c in sorted(marker["counts"].items())
    ]
    return "\n".join(lines)


@flow(name="build-triplets")
def build_triplets(
    data_root: str | None = None,
    version: str = "v1",
    luts: str | None = None,
    per_image: int = 8,
    crop_size: int | None = None,
    seed: int | None = None,
    overwrite: bool = False,
    encoding: str = DEFAULT_ENCODING,
    rows_per_group: int = ROWS_PER_GROUP,
    triplets_per_shard: int = 512,
    num_cpus: int | None = None,
    region_fraction: float = 0.0,
    masks: str | None = None,
    natural_fraction: float = 0.0,
) -> dict:
    """Make ``per_image`` dual-LUT triplets of every ingested photo and write them as Parquet shards.

    Args:
        data_root: where ``images/manifest.parquet`` is and ``triplets/`` goes (default: ``SSH_DATA_ROOT``).
        version: the name of this build (a folder under ``triplets/``).
        luts: ``generator:SEED[:COUNT[:STRENGTHS]]`` (the default: the ``SSH_SEED`` seed, 100 grades at
            full strength; STRENGTHS ``mild`` or ``mixed`` draws gentler ones) or a URL of a folder of
            ``.cube`` files.
        per_image: triplets per photo.
        crop_size: crop side in pixels (default: ``SSH_CROP_SIZE``).
        seed: the seed of every triplet's crops, flips and LUT choice (default: ``SSH_SEED``).
        overwrite: rebuild a complete version (otherwise a complete version is left as it is).
        encoding: image encoding in the shards (lossless: webp, png or raw).
        rows_per_group: rows per Parquet row group (the reader's unit of work).
        triplets_per_shard: about this many triplets per file (whole photos per file).
        num_cpus: cap on the CPUs used (and of a local Ray started here); default all.
        region_fraction: the share of triplets laid out as ``harmonize`` sees a composite (a
            foreground region and the scene around it) instead of two overlapping crops.
        masks: a folder URL of object masks (``*.png``, e.g. BSDS500 segments): region triplets take
            their foreground's shape from these outlines instead of a random blob.
        natural_fraction: the share of triplets whose second grade is the identity: the reference and the
            pseudo ground truth keep the photo's own colours, as a composite's background does.
    """
    settings = get_settings()
    data_root = data_root or settings.data_root
    crop_size = crop_size or settings.crop_size
    seed = settings.seed if seed is None else seed
    luts = luts or default_lut_spec(seed)
    log = run_logger()
    root = version_root_of(data_root, version)
    params, prepared = plan_build(
        data_root,
        version,
        luts=luts,
        per_image=per_image,
        crop_size=crop_size,
        seed=seed,
        encoding=encoding,
        rows_per_group=rows_per_group,
        triplets_per_shard=triplets_per_shard,
        overwrite=overwrite,
        region_fraction=region_fraction,
        masks=masks,
        natural_fraction=natural_fraction,
    )
    if prepared.complete is not None:
        log.info("%s is complete with the same parameters: nothing to do (overwrite=True rebuilds it)", root)
        marker = prepared.complete
    else:
        entries = generate_shards(prepared.todo, params, data_root, version, num_cpus)
        marker = publish_version(data_root, version, params, [*prepared.kept, *entries])
    url = storage.join(root, BUILD_MARKER)
    create_markdown_artifact(
        summary_markdown(marker, url, prepared.complete is not None),
        key="build-triplets-summary",
        description="build-triplets run summary",
    )
    return {
        "version_root": root,
        "manifest": url,
        "built": prepared.complete is None,
        "kept_shards": len(prepared.kept),
        "triplets": marker["triplets"],
        "bytes_per_triplet": marker["bytes_per_triplet"],
        "counts": marker["counts"],
        "params": marker["params"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.build_triplets", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--version", default="v1")
    parser.add_argument("--luts", default=None)
    parser.add_argument("--per-image", type=int, default=8)
    parser.add_argument("--crop-size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--encoding", default=DEFAULT_ENCODING)
    parser.add_argument("--num-cpus", type=int, default=None)
    parser.add_argument("--region-fraction", type=float, default=0.0)
    parser.add_argument("--masks", default=None, help="folder of object masks shaping region triplets")
    parser.add_argument("--natural-fraction", type=float, default=0.0, help="share of triplets with a natural reference")
    args = parser.parse_args(argv)
    result = build_triplets(
        args.data_root,
        args.version,
        args.luts,
        args.per_image,
        args.crop_size,
        args.seed,
        args.overwrite,
        args.encoding,
        num_cpus=args.num_cpus,
        region_fraction=args.region_fraction,
        masks=args.masks,
        natural_fraction=args.natural_fraction,
    )
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
