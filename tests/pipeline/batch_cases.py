"""Small generated inputs for the batch-harmonization tests (tasks and flows): images, masks, a tiny model."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ssh_model.storage import join, write_bytes_atomic


def smooth_photo(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A random smooth colour image (upsampled noise), uint8 (H, W, 3)."""
    small = rng.integers(0, 256, size=(max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC))


def ellipse_mask(height: int, width: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    inside = ((yy - height / 2) / (height / 3)) ** 2 + ((xx - width / 2) / (width / 3)) ** 2 <= 1.0
    return inside.astype(np.uint8) * 255  # (H, W) uint8


def encode(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def write_case(
    root: str,
    name: str,
    rng: np.random.Generator,
    size: tuple[int, int] = (64, 80),
    fmt: str = "JPEG",
    mask_size: tuple[int, int] | None = None,
    empty_mask: bool = False,
    target: bool = True,
    background: bool = False,
    rgba: bool = False,
    reference_mask: str | None = None,
) -> dict[str, str]:
    """Write a composite (foreground colour-shifted), its mask and ground truth; returns its catalog row.

    ``rgba``: the composite is a PNG whose alpha is the mask, and the row has no mask.
    ``reference_mask``: also write a reference mask of the composite's size: "left" (its left half),
    "empty" (nothing) or "small" (of another size).
    """
    height, width = size
    photo = smooth_photo(rng, height, width)
    mask = np.zeros(mask_size or size, np.uint8) if empty_mask else ellipse_mask(*(mask_size or size))
    composite = photo.copy()
    if mask.shape == (height, width):
        shifted = np.clip(photo.astype(np.int16) + rng.integers(-60, 60, size=3), 0, 255).astype(np.uint8)
        composite[mask > 0] = shifted[mask > 0]
    ext = ".jpg" if fmt == "JPEG" and not rgba else ".png"
    row = {"id": name, "composite": join(root, "in", f"{name}{ext}")}
    if rgba:
        write_bytes_atomic(row["composite"], encode(np.dstack([composite, mask]), "PNG"))  # RGB kept under alpha 0
    else:
        row["mask"] = join(root, "in", f"{name}-mask.png")
        write_bytes_atomic(row["composite"], encode(composite, fmt))
        write_bytes_atomic(row["mask"], encode(mask, "PNG"))
    if reference_mask is not None:
        region = np.zeros((height, width) if reference_mask != "small" else (height // 2, width // 2), np.uint8)
        if reference_mask != "empty":
            region[:, : region.shape[1] // 2] = 255
        row["reference_mask"] = join(root, "in", f"{name}-reference.png")
        write_bytes_atomic(row["reference_mask"], encode(region, "PNG"))
    if target:
        row["target"] = join(root, "in", f"{name}-target.png")
        write_bytes_atomic(row["target"], encode(photo, "PNG"))
    if background:
        row["background"] = join(root, "in", f"{name}-bg.jpg")
        write_bytes_atomic(row["background"], encode(smooth_photo(rng, height // 2, width // 2), "JPEG"))
    return row


def save_tiny_model(url: str, seed: int = 0) -> str:
    """A randomly initialised ``ssh_tiny`` checkpoint (seeded) written to ``url``."""
    import torch

    from ssh_model.checkpoints import save_model
    from ssh_model.network import ssh_tiny

    torch.manual_seed(seed)
    save_model(ssh_tiny().eval(), url)
    return url


@pytest.fixture(scope="session")
def tiny_model_url(tmp_path_factory) -> str:
    return save_tiny_model(str(tmp_path_factory.mktemp("model") / "tiny.safetensors"))
