"""The scheduled retraining chain: ingest-images -> build-triplets -> train-model (-> registry gate).

Each stage is its own flow (a subflow here), idempotent on its own, so a scheduled run over an
unchanged source does almost nothing: ingest adds no photo, the triplet version named after the
manifest is already complete, and the training run of that version resumes at its last step and
finds itself registered. When photos arrive, the manifest changes, a new triplet version is
built, and a new run trains, registers a candidate and faces the promotion gate.
"""

from __future__ import annotations

import hashlib
from typing import Any

from prefect import flow

from flows.build_triplets import build_triplets
from flows.ingest_images import ingest_images
from flows.train_model import train_model
from pipeline.configs import IngestConfig, TrainModelConfig, TripletConfig
from pipeline.triplet_plan import image_manifest
from ssh_model.settings import get_settings
from ssh_model.shards import SCHEMA_VERSION
from tasks.common import run_logger


def data_version_name(data_root: str, config: TripletConfig) -> str:
    """A triplet version named after the image manifest, the build parameters and the shard schema (stable
    across reruns; a new schema gets a new version instead of a conflict with the old one's shards)."""
    settings = get_settings()
    _, manifest_sha = image_manifest(data_root)
    crop_size, seed = config.crop_and_seed(settings)
    name = f"m{manifest_sha[:10]}-k{config.per_image}-c{crop_size}-s{seed}-v{SCHEMA_VERSION}"
    if config.region_fraction:
        name += f"-r{config.region_fraction:g}"
    if config.luts:
        name += f"-l{hashlib.sha256(config.luts.encode()).hexdigest()[:8]}"
    if config.masks:
        name += f"-o{hashlib.sha256(config.masks.encode()).hexdigest()[:8]}"
    if config.natural_fraction:
        name += f"-n{config.natural_fraction:g}"
    return name


@flow(name="retrain")
def retrain(
    data_root: str | None = None,
    version: str | None = None,
    ingest: IngestConfig | None = None,
    triplets: TripletConfig | None = None,
    train: TrainModelConfig | None = None,
) -> dict[str, Any]:
    """Ingest new photos, build their triplets, train on them and run the promotion gate.

    Args:
        data_root: where everything lives (default: ``SSH_DATA_ROOT``).
        version: the triplet version (default: named after the manifest and the build parameters).
        ingest, triplets, train: each stage's config (``pipeline.configs``; default: their defaults).
    """
    data_root = data_root or get_settings().data_root
    triplets = triplets or TripletConfig()
    log = run_logger()
    ingested = ingest_images(data_root=data_root, config=ingest)
    version = version or data_version_name(data_root, triplets)
    log.info("ingest: %d new photos, %d in all; triplet version %s", ingested["added"], ingested["images"], version)
    built = build_triplets(data_root=data_root, version=version, config=triplets)
    trained = train_model(data_root=data_root, version=version, config=train)
    gate = trained.get("gate") or {}
    log.info(
        "retrain: %s from %d triplets; gate %s",
        trained.get("registered_version", trained["model_url"]),
        built["triplets"],
        "promoted" if gate.get("promoted") else "refused",
    )
    return {"ingest": ingested, "version": version, "triplets": built["triplets"], "train": trained}
