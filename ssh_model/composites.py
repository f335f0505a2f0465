"""Synthetic composites with ground truth: the fixed evaluation set.

Real harmonization benchmarks (RealHM, iHarmony4) cannot be downloaded here, so we make
composites the way iHarmony4 did: take a real photo (the ground truth), re-grade a region of
it with a colour LUT, and ask the model to undo the mismatch. The region is a soft-edged
random blob. Strengths are mixed on purpose: strong casts test correction, mild re-grades test
that a model knows when to leave colours alone (the untouched composite is the baseline to
beat there, see docs/method.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ssh_model.lut import apply_lut, random_lut

# (label, LUT strength): every photo gets one composite per level.
EVAL_LEVELS = (("mild", 0.35), ("medium", 0.7), ("strong", 1.0))


@dataclass(frozen=True)
class Composite:
    id: str
    composite: np.ndarray  # (H, W, 3) uint8, foreground re-graded
    mask: np.ndarray  # (H, W) float32 in [0, 1], soft edge
    target: np.ndarray  # (H, W, 3) uint8, the untouched photo
    lut: str
    level: str


def blob_mask(height: int, width: int, rng: np.random.Generator, area: tuple[float, float] = (0.08, 0.3)) -> np.ndarray:
    """A random rotated ellipse covering a fraction ``area`` of the image, feathered by ~1.5% of its size.

    Returns:
        float32 (H, W) in [0, 1].
    """
    fraction = rng.uniform(*area)
    aspect = rng.uniform(0.5, 2.0)
    semi_a = np.sqrt(fraction * height * width * aspect / np.pi)
    semi_b = semi_a / aspect
    cy = rng.uniform(0.3, 0.7) * height
    cx = rng.uniform(0.3, 0.7) * width
    angle = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    u = (dx * np.cos(angle) + dy * np.sin(angle)) / semi_a
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) / semi_b
    radius = np.sqrt(u * u + v * v)  # 1.0 on the ellipse boundary
    feather = max(0.015 * max(height, width) / min(semi_a, semi_b), 1e-3)
    return np.clip((1.0 - radius) / feather + 0.5, 0.0, 1.0).astype(np.float32)


def make_composite(photo: np.ndarray, lut_seed: int, strength: float, rng: np.random.Generator) -> tuple:
    """Re-grade a random blob of ``photo``; returns (composite, mask, lut_name)."""
    mask = blob_mask(photo.shape[0], photo.shape[1], rng)
    lut = random_lut(lut_seed, strength=strength)
    graded = apply_lut(photo, lut).astype(np.float32)
    alpha = mask[..., None]
    composite = np.rint(alpha * graded + (1.0 - alpha) * photo.astype(np.float32)).astype(np.uint8)
    return composite, mask, lut.name


def evaluation_set(photos: dict[str, np.ndarray], seed: int = 0) -> list[Composite]:
    """The fixed evaluation set: one composite per photo and strength level, fully determined by ``seed``.

    Args:
        photos: name -> (H, W, 3) uint8 photo, e.g. the bundled samples.
        seed: changes masks and grades; keep it fixed to compare models over time.
    """
    items = []
    for p, name in enumerate(sorted(photos)):
        for level_index, (level, strength) in enumerate(EVAL_LEVELS):
            rng = np.random.default_rng([seed, p, level_index])
            lut_seed = int(rng.integers(0, 2**31))
            composite, mask, lut_name = make_composite(photos[name], lut_seed, strength, rng)
            items.append(Composite(f"{name}-{level}", composite, mask, photos[name], lut_name, level))
    return items
