"""Small generated inputs for the training, evaluation, registry and flow tests.

- ``write_triplet_version``: a complete triplet version (shards + ``manifest.json``) made with the
  real pieces (``make_triplet`` over a generated LUT bank, ``ShardWriter``, ``marker_payload``),
  without Ray: fast.
- ``build_version_with_ray``: the same through build-triplets' Ray Data path (``run_shard_builders``).
- ``mlflow_store``: a context manager pointing MLflow (and ``SSH_DATA_ROOT``) at a fresh folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from collections.abc import Iterator
from unittest.mock import patch  # of os.environ only

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from ssh_model import storage
from ssh_model.checkpoints import save_model
from ssh_model.network import build_model
from ssh_model.shards import ShardWriter, triplet_row
from ssh_model.triplets import make_triplet

LUTS = "generator:5:6"
LUT_SIZE = 9


def smooth_photo(rng: np.random.Generator, height: int = 96, width: int = 128) -> np.ndarray:
    """A random smooth colour photo-like image (upsampled noise), uint8 (H, W, 3)."""
    small = rng.integers(0, 256, size=(max(2, height // 12), max(2, width // 12), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC))


def _params(crop_size: int, per_image: int, rows_per_group: int, photos_per_shard: int):
    from pipeline.triplet_plan import BuildParams, load_lut_bank, lut_bank_digest

    bank = load_lut_bank(LUTS, LUT_SIZE)
    return bank, BuildParams(
        luts=LUTS,
        lut_size=LUT_SIZE,
        lut_bank_sha256=lut_bank_digest(bank),
        image_manifest_sha256="0" * 64,
        per_image=per_image,
        crop_size=crop_size,
        seed=1,
        encoding="webp",
        rows_per_group=rows_per_group,
        images_per_shard=photos_per_shard,
    )


def write_triplet_version(
    root: str,
    rng: np.random.Generator,
    splits: dict[str, int],
    crop_size: int = 32,
    per_image: int = 4,
    rows_per_group: int = 4,
) -> str:
    """A complete version at ``root``: ``{split}/part-00000.parquet`` with ``splits[split]`` photos x
    ``per_image`` triplets each, and the completion marker. Returns ``root``."""
    from pipeline.triplet_versions import BUILD_MARKER, marker_payload, write_json

    bank, params = _params(crop_size, per_image, rows_per_group, max(splits.values()))
    entries = []
    for split, photos in splits.items():
        path = f"{split}/part-00000.parquet"
        with ShardWriter(storage.join(root, path), rows_per_group) as writer:
            for _ in range(photos):
                photo = smooth_photo(rng)
                image_id = hashlib.sha256(photo.tobytes()).hexdigest()
                for k in range(per_image):
                    first, second = (int(i) for i in rng.choice(len(bank), size=2, replace=False))
                    triplet = make_triplet(photo, bank[first], bank[second], rng, crop_size=crop_size)
                    writer.write(triplet_row(triplet, image_id=image_id, split=split, k=k, seed=params.seed))
        info = writer.info
        entries.append(
            {
                "path": path,
                "split": split,
                "images": photos,
                "rows": info.rows,
                "row_groups": info.row_groups,
                "bytes": info.bytes,
            }
        )
    write_json(storage.join(root, BUILD_MARKER), marker_payload(root.rsplit("/", 1)[-1], params, entries))
    return root


def build_version_with_ray(
    data_root: str, rng: np.random.Generator, photos: int, version: str = "v1", crop_size: int = 32, per_image: int = 4
) -> str:
    """Ingest-like photos + a manifest under ``data_root``, then build-triplets' Ray Data shard builders
    and its completion marker. Returns the version root."""
    from pipeline.ingest import MANIFEST_SCHEMA, images_url, split_of
    from pipeline.triplet_plan import plan_shards
    from pipeline.triplet_versions import BUILD_MARKER, marker_payload, prepare_version, version_root_of, write_json
    from pipeline.triplets import run_shard_builders

    rows = []
    for _ in range(photos):
        buffer = io.BytesIO()
        Image.fromarray(smooth_photo(rng)).save(buffer, format="PNG")
        data = buffer.getvalue()
        image_id = hashlib.sha256(data).hexdigest()
        storage.write_bytes_atomic(images_url(data_root, f"blobs/{image_id}.png"), data)
        rows.append(
            {
                "id": image_id,
                "source_url": f"gen://{image_id}",
                "width": 128,
                "height": 96,
                "format": "PNG",
                "bytes": len(data),
                "split": split_of(image_id),
                "blob": f"blobs/{image_id}.png",
            }
        )
    manifest = pa.Table.from_pylist(sorted(rows, key=lambda r: r["id"]), schema=MANIFEST_SCHEMA)
    _, params = _params(crop_size, per_image, 4, 2)
    root = version_root_of(data_root, version)
    plans = plan_shards(manifest, params.images_per_shard)
    prepared = prepare_version(root, params, plans, overwrite=False)
    entries = run_shard_builders(prepared.todo, params, data_root, root)
    write_json(storage.join(root, BUILD_MARKER), marker_payload(version, params, entries))
    return root


def save_random_model(url: str, seed: int, preset: str = "tiny") -> str:
    """A seeded, randomly initialised checkpoint of ``preset`` (default ``ssh_tiny``) at ``url``; a colour
    model's head is randomised too (fresh, it is the identity)."""
    torch.manual_seed(seed)
    model = build_model(preset)
    if getattr(model, "predicts_transform", False):
        torch.nn.init.normal_(model.head[-1].weight, std=0.02)
    save_model(model, url)
    return url


@contextlib.contextmanager
def mlflow_store(folder: str) -> Iterator[str]:
    """MLflow on a fresh SQLite file in ``folder`` (``MLFLOW_TRACKING_URI``); ``SSH_DATA_ROOT`` too."""
    import mlflow

    uri = f"sqlite:///{os.path.join(folder, 'mlflow.db')}"
    previous = mlflow.get_tracking_uri()
    try:
        with patch.dict(os.environ, {"MLFLOW_TRACKING_URI": uri, "SSH_DATA_ROOT": folder}):
            yield uri
    finally:
        mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """torch on one thread in this module's tests, restored after: on this shared 2-core machine two
    OpenMP threads spin against other jobs and a tiny forward takes ~30x longer than on one thread."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)
