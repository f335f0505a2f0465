"""What a triplet build is made of, before anything is built: the LUT bank, the object outlines, the
build's parameters (``BuildParams``) and its cut into shards (``plan_shards``), each a pure function of
the image manifest and the arguments; ``pipeline.triplets`` builds the shards and keeps the versions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image

from pipeline.ingest import MANIFEST_SCHEMA, images_url, read_table
from ssh_model import storage
from ssh_model.images import decode_mask
from ssh_model.lut import LUT, lut_bank, read_cube_folder
from ssh_model.lut_generator import STRENGTH_DISTRIBUTIONS
from ssh_model.settings import get_settings
from ssh_model.shards import LOSSLESS_ENCODINGS, SCHEMA_VERSION

GENERATOR_PREFIX = "generator:"
DEFAULT_LUT_COUNT = 100
SPLITS = ("train", "val", "test")
OUTLINE_SIDE = 160  # object masks are kept at most this size: they shape 2 x crop-size scenes


# -- LUT bank ---------------------------------------------------------------------------------------


def default_lut_spec(seed: int | None = None) -> str:
    return f"{GENERATOR_PREFIX}{get_settings().seed if seed is None else seed}"


def load_lut_bank(spec: str, lut_size: int) -> list[LUT]:
    """``generator:SEED[:COUNT[:STRENGTHS]]`` (the seeded generator, COUNT grades, default 100, at strengths
    drawn from STRENGTHS: full (the default), mixed or mild; ``lut_bank``) or a .cube folder URL."""
    if spec.startswith(GENERATOR_PREFIX):
        expected = f"expected generator:SEED[:COUNT[:STRENGTHS]] with STRENGTHS one of {STRENGTH_DISTRIBUTIONS}"
        parts = spec[len(GENERATOR_PREFIX) :].split(":")
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
        return {"split": self.split, "index": self.index, "image_ids": list(self.image_ids), "blobs": list(self.blobs)}


def plan_shards(manifest: pa.Table, images_per_shard: int) -> list[ShardPlan]:
    """Cut each split's photos (sorted by id) into shards of ``images_per_shard`` photos."""
    if images_per_shard < 1:
        raise ValueError(f"images_per_shard must be at least 1, got {images_per_shard}")
    rows = sorted(manifest.select(["id", "split", "blob"]).to_pylist(), key=lambda r: r["id"])
    plans = []
    for split in sorted({r["split"] for r in rows}):
        chosen = [r for r in rows if r["split"] == split]
        for index, start in enumerate(range(0, len(chosen), images_per_shard)):
            part = chosen[start : start + images_per_shard]
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


def image_manifest(data_root: str) -> tuple[pa.Table, str]:
    """The image manifest table and the sha256 of its file."""
    url = images_url(data_root, "manifest.parquet")
    if not storage.exists(url):
        raise FileNotFoundError(f"no image manifest at {url}: run the ingest-images flow first")
    data = storage.read_bytes(url)
    return read_table(url, MANIFEST_SCHEMA), hashlib.sha256(data).hexdigest()


def check_build_arguments(
    per_image: int,
    crop_size: int,
    seed: int,
    encoding: str,
    rows_per_group: int,
    triplets_per_shard: int,
    region_fraction: float,
    natural_fraction: float,
) -> None:
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
