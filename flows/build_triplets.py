"""Flow ``build-triplets``: the image manifest + a LUT bank + a seed -> a version of triplet shards.

    prefect deployment run build-triplets/default -p data_root=s3://bucket/ssh -p version=2026-11-25 \\
        -p 'config={"per_image": 16}'
    ssh-harmonize build-triplets --data-root s3://bucket/ssh --version v1 --per-image 16

Runs Ray Data on local cores (``ray.init()``), or unchanged on a cluster when ``RAY_ADDRESS`` is
set. Writes ``{data_root}/triplets/{version}/{split}/part-*.parquet`` and, last,
``{data_root}/triplets/{version}/manifest.json``. Same inputs and seed -> same bytes; an interrupted
build is completed by a re-run; a complete version re-run is a no-op. See ``pipeline.triplets``.
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from pipeline.configs import VERSION, TripletConfig
from pipeline.triplet_versions import BUILD_MARKER, version_root_of
from ssh_model import storage
from ssh_model.settings import get_settings
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
def build_triplets(data_root: str | None = None, version: str = VERSION, config: TripletConfig | None = None) -> dict:
    """Make ``config.per_image`` dual-LUT triplets of every ingested photo and write them as Parquet shards.

    Args:
        data_root: where ``images/manifest.parquet`` is and ``triplets/`` goes (default: ``SSH_DATA_ROOT``).
        version: the name of this build (a folder under ``triplets/``).
        config: how to build (``pipeline.configs.TripletConfig``; default: its defaults).
    """
    config = config or TripletConfig()
    data_root = data_root or get_settings().data_root
    log = run_logger()
    root = version_root_of(data_root, version)
    params, prepared = plan_build(data_root, version, config)
    if prepared.complete is not None:
        log.info("%s is complete with the same parameters: nothing to do (overwrite=True rebuilds it)", root)
        marker = prepared.complete
    else:
        entries = generate_shards(prepared.todo, params, data_root, version, config.num_cpus)
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
