"""The scheduled retraining chain: ingest-images -> build-triplets -> train-model (-> registry gate).

Each stage is its own flow (a subflow here), idempotent on its own, so a scheduled run over an
unchanged source does almost nothing: ingest adds no photo, the triplet version named after the
manifest is already complete, and the training run of that version resumes at its last step and
finds itself registered. When photos arrive, the manifest changes, a new triplet version is
built, and a new run trains, registers a candidate and faces the promotion gate.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from typing import Any

from prefect import flow

from flows.build_triplets import build_triplets
from flows.ingest_images import ingest_images
from flows.train_model import train_model
from pipeline.triplet_plan import image_manifest
from ssh_model.settings import get_settings
from ssh_model.shards import SCHEMA_VERSION
from tasks.common import run_logger


def data_version_name(
    data_root: str,
    per_image: int,
    crop_size: int,
    seed: int,
    luts: str | None = None,
    region_fraction: float = 0.0,
    masks: str | None = None,
    natural_fraction: float = 0.0,
) -> str:
    """A triplet version named after the image manifest, the build parameters and the shard schema (stable
    across reruns; a new schema gets a new version instead of a conflict with the old one's shards)."""
    _, manifest_sha = image_manifest(data_root)
    name = f"m{manifest_sha[:10]}-k{per_image}-c{crop_size}-s{seed}-v{SCHEMA_VERSION}"
    if region_fraction:
        name += f"-r{region_fraction:g}"
    if luts:
        name += f"-l{hashlib.sha256(luts.encode()).hexdigest()[:8]}"
    if masks:
        name += f"-o{hashlib.sha256(masks.encode()).hexdigest()[:8]}"
    if natural_fraction:
        name += f"-n{natural_fraction:g}"
    return name


@flow(name="retrain")
def retrain(
    sources: list[str] | None = None,
    data_root: str | None = None,
    version: str | None = None,
    per_image: int = 8,
    crop_size: int | None = None,
    luts: str | None = None,
    region_fraction: float = 0.0,
    masks: str | None = None,
    natural_fraction: float = 0.0,
    preset: str = "auto",
    model_family: str = "ssh",
    steps: int | None = None,
    batch_size: int | None = None,
    lr: float = 2e-4,
    num_workers: int | None = None,
    checkpoint_every: int = 200,
    select_photos: int = 64,
    gate_margin: float = 0.1,
    eval_max_side: int | None = None,
    eval_photos: int | None = None,
) -> dict[str, Any]:
    """Ingest new photos, build their triplets, train on them and run the promotion gate.

    Args:
        sources: photo URLs, folders or globs (default ``builtin://samples``, the bundled photos).
        data_root: where everything lives (default: ``SSH_DATA_ROOT``).
        version: the triplet version (default: named after the manifest and the build parameters).
        per_image, crop_size: triplets per photo and their side (default ``SSH_CROP_SIZE``).
        luts, region_fraction, masks, natural_fraction: the grades, the share of region-layout triplets, the
            object masks that shape them and the share of triplets with a natural reference (see build-triplets).
        preset, model_family, steps, batch_size, lr, num_workers, checkpoint_every: passed to train-model
            (defaults by hardware; ``model_family`` "ssh" or "colour"; the model is picked among the
            checkpoints on composites of up to ``select_photos`` val-split photos).
        gate_margin: PSNR (dB) by which a candidate must beat the champion to be promoted.
        eval_max_side, eval_photos: shrink the fixed evaluation set (None = the reference set).
    """
    settings = get_settings()
    data_root = data_root or settings.data_root
    crop_size = crop_size or settings.crop_size
    log = run_logger()
    ingested = ingest_images(sources=sources, data_root=data_root)
    version = version or data_version_name(
        data_root, per_image, crop_size, settings.seed, luts, region_fraction, masks, natural_fraction
    )
    log.info("ingest: %d new photos, %d in all; triplet version %s", ingested["added"], ingested["images"], version)
    built = build_triplets(
        data_root=data_root,
        version=version,
        luts=luts,
        per_image=per_image,
        crop_size=crop_size,
        region_fraction=region_fraction,
        masks=masks,
        natural_fraction=natural_fraction,
    )
    trained = train_model(
        data_root=data_root,
        version=version,
        preset=preset,
        model_family=model_family,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        num_workers=num_workers,
        checkpoint_every=checkpoint_every,
        select_photos=select_photos,
        gate_margin=gate_margin,
        eval_max_side=eval_max_side,
        eval_photos=eval_photos,
    )
    gate = trained.get("gate") or {}
    log.info(
        "retrain: %s from %d triplets; gate %s",
        trained.get("registered_version", trained["model_url"]),
        built["triplets"],
        "promoted" if gate.get("promoted") else "refused",
    )
    return {"ingest": ingested, "version": version, "triplets": built["triplets"], "train": trained}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.retrain", description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="*", help="photo URLs, folders or globs (default: builtin://samples)")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--per-image", type=int, default=8, help="triplets per photo")
    parser.add_argument("--crop-size", type=int, default=None, help="triplet side (default: SSH_CROP_SIZE)")
    parser.add_argument("--luts", default=None, help="generator:SEED[:COUNT[:full|mixed|mild]] or a .cube folder")
    parser.add_argument("--region-fraction", type=float, default=0.0, help="share of region-layout triplets")
    parser.add_argument("--masks", default=None, help="folder of object masks shaping the region triplets")
    parser.add_argument("--natural-fraction", type=float, default=0.0, help="share of triplets with a natural reference")
    parser.add_argument("--model-family", default="ssh", choices=("ssh", "colour"))
    parser.add_argument("--preset", default="auto")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None, help="triplets per worker per step")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--checkpoint-every", type=int, default=200)
    parser.add_argument("--select-photos", type=int, default=64, help="val photos that pick the checkpoint")
    args = parser.parse_args(argv)
    result = retrain(
        sources=args.sources or None,
        data_root=args.data_root,
        per_image=args.per_image,
        crop_size=args.crop_size,
        luts=args.luts,
        region_fraction=args.region_fraction,
        masks=args.masks,
        natural_fraction=args.natural_fraction,
        preset=args.preset,
        model_family=args.model_family,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        checkpoint_every=args.checkpoint_every,
        select_photos=args.select_photos,
    )
    print(json.dumps({k: v for k, v in result.items() if k != "train"}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
