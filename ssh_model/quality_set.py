"""Composites for measuring harmonization quality: object-shaped foregrounds, sized colour mismatches.

Two kinds of case, both pure functions of their inputs and a seeded generator:

- ``graded_composite``: a photo whose foreground (an object-shaped mask, feathered like a cut-out)
  is re-graded by a photographic edit (``ssh_model.grades``, not the training LUT generator). The
  edit's strength is searched so that the foreground's mean colour shift, CIEDE2000 between the
  photo and the edited photo over the foreground, lands in the case's bucket (``BUCKETS``: mild,
  medium, strong). The untouched photo is the ground truth.
- ``pasted_composite``: an object cut from one photo and pasted onto another: no ground truth; its
  mismatch is ``lab_stats_distance``, how far the foreground's mean Lab colour is from the background's.

``place_mask`` puts an object's outline (e.g. a BSDS500 segment of another photo) on a photo that has no
mask of its own, scaled to a share of its area.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter
from skimage.color import deltaE_ciede2000, rgb2lab

from ssh_model.composites import Composite
from ssh_model.grades import PhotoGrade, apply_grade, random_grade
from ssh_model.lut import apply_lut, random_lut

# (name, low, high): the foreground's mean CIEDE2000 shift. Strong has a ceiling so that no case is absurd.
BUCKETS = (("mild", 1.0, 5.0), ("medium", 5.0, 12.0), ("strong", 12.0, 25.0))
MAX_STRENGTH = 3.0  # the largest multiple of a grade's designed strength the search tries
SEARCH_STEPS = 12
SHIFT_PIXELS = 8_000  # foreground pixels sampled to measure a shift
FEATHER = 0.004  # of the image's long side: the Gaussian blur of a cut-out's edge
OBJECT_AREA = (0.06, 0.3)  # share of the image a placed or pasted object covers
SELECT_LUT_SEEDS = (3_000_000, 4_000_000)  # [low, high): seeds of "lut" grades (training banks draw 63-bit seeds)


def bucket_range(name: str) -> tuple[float, float]:
    for bucket, low, high in BUCKETS:
        if bucket == name:
            return low, high
    raise ValueError(f"unknown bucket {name!r}; expected one of {[b[0] for b in BUCKETS]}")


def foreground_pixels(image: np.ndarray, mask: np.ndarray, limit: int = SHIFT_PIXELS) -> np.ndarray:
    """(N, 3) uint8: up to ``limit`` pixels of ``image`` where ``mask`` > 0.5, evenly strided."""
    pixels = image[mask > 0.5]
    stride = max(1, len(pixels) // limit)
    return pixels[::stride][:limit]


def mean_delta_e(a: np.ndarray, b: np.ndarray) -> float:
    """Mean CIEDE2000 between two (N, 3) uint8 pixel arrays."""
    lab_a = rgb2lab(a[:, None, :].astype(np.float64) / 255.0)
    lab_b = rgb2lab(b[:, None, :].astype(np.float64) / 255.0)
    return float(np.mean(deltaE_ciede2000(lab_a, lab_b)))


def strength_for_shift(
    pixels: np.ndarray, regrade: Callable[[np.ndarray, float], np.ndarray], low: float, high: float, rng: np.random.Generator
) -> float | None:
    """A strength at which ``regrade(pixels, strength)`` shifts ``pixels`` by a mean CIEDE2000 drawn uniformly
    in [low, high].

    Bisection on the strength (the shift grows with it); None when even ``MAX_STRENGTH`` falls short.
    """
    target = rng.uniform(low, high)

    def shift(strength: float) -> float:
        return mean_delta_e(pixels, regrade(pixels, strength))

    if shift(MAX_STRENGTH) < target:
        return None
    lo, hi = 0.0, MAX_STRENGTH
    for _ in range(SEARCH_STEPS):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if shift(mid) < target else (lo, mid)
    strength = 0.5 * (lo + hi)
    return strength if low <= shift(strength) <= high else None


def photo_regrade(grade: PhotoGrade) -> Callable[[np.ndarray, float], np.ndarray]:
    """``grade`` as a function of (pixels, strength), for ``strength_for_shift``."""
    return lambda pixels, strength: apply_grade(pixels, grade.scaled(strength))


def feather(mask: np.ndarray) -> np.ndarray:
    """A hard (H, W) mask (bool or 0/255) -> float32 in [0, 1] with an edge blurred like a cut-out's."""
    hard = Image.fromarray(np.where(np.asarray(mask) > 0, 255, 0).astype(np.uint8))
    radius = max(0.5, FEATHER * max(hard.size))
    return np.asarray(hard.filter(ImageFilter.GaussianBlur(radius)), dtype=np.float32) / 255.0


def _object_crop(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(np.asarray(mask) > 0)
    if len(ys) == 0:
        raise ValueError("object mask is empty")
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _scaled_object(
    mask: np.ndarray, height: int, width: int, rng: np.random.Generator, area: tuple[float, float]
) -> tuple[tuple[int, int, int, int], float, int, int]:
    """Where and how large an object goes on a (height, width) image: (its crop box, scale, x, y)."""
    x0, y0, x1, y1 = _object_crop(mask)
    object_pixels = float(np.count_nonzero(np.asarray(mask)[y0:y1, x0:x1] > 0))
    scale = np.sqrt(rng.uniform(*area) * height * width / object_pixels)
    scale = min(scale, 0.95 * width / (x1 - x0), 0.95 * height / (y1 - y0))  # it must fit
    w, h = max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))
    return (x0, y0, x1, y1), scale, int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))


def place_mask(
    mask: np.ndarray, height: int, width: int, rng: np.random.Generator, area: tuple[float, float] = OBJECT_AREA
) -> np.ndarray:
    """An object's outline from ``mask`` (any size) scaled to cover ``area`` of a (height, width) image,
    at a random position: a bool (height, width) mask."""
    box, scale, x, y = _scaled_object(mask, height, width, rng, area)
    shape = Image.fromarray(np.where(np.asarray(mask) > 0, 255, 0).astype(np.uint8)).crop(box)
    w, h = max(1, round(shape.width * scale)), max(1, round(shape.height * scale))
    placed = np.zeros((height, width), dtype=bool)
    placed[y : y + h, x : x + w] = np.asarray(shape.resize((w, h), Image.Resampling.BILINEAR)) >= 128
    if not placed.any():
        raise ValueError("placed object mask is empty")
    return placed


def lut_regrade(seed: int) -> Callable[[np.ndarray, float], np.ndarray]:
    """The training generator's grade ``random_lut(seed)`` as a function of (pixels, strength)."""

    def regrade(pixels: np.ndarray, strength: float) -> np.ndarray:
        flat = np.ascontiguousarray(pixels.reshape(-1, 1, 3))
        return apply_lut(flat, random_lut(seed, size=17, strength=strength)).reshape(pixels.shape)

    return regrade


def graded_composite(
    case_id: str,
    photo: np.ndarray,
    mask: np.ndarray,
    bucket: str,
    rng: np.random.Generator,
    family: str = "photo",
    max_tries: int = 20,
) -> Composite:
    """``photo`` with its ``mask`` region re-graded by a random edit whose shift falls in ``bucket``.

    Args:
        case_id: the composite's id.
        photo: (H, W, 3) uint8, the ground truth.
        mask: (H, W) hard mask (bool or 0/255) of the foreground, feathered here; or a float mask in
            [0, 1] that is already soft (used as it is).
        bucket: one of ``BUCKETS``' names.
        rng: all randomness (the edits tried, the target shift).
        family: "photo" (``ssh_model.grades``: the quality benchmark's edits) or "lut" (the training
            generator at seeds of ``SELECT_LUT_SEEDS``, which no training bank draws: checkpoint selection).
    """
    low, high = bucket_range(bucket)
    soft = mask.astype(np.float32) if np.issubdtype(mask.dtype, np.floating) else feather(mask)
    pixels = foreground_pixels(photo, soft)
    for _ in range(max_tries):
        if family == "photo":
            grade = random_grade(rng)
            regrade, name = photo_regrade(grade), grade.describe()
        elif family == "lut":
            seed = int(rng.integers(*SELECT_LUT_SEEDS))
            regrade, name = lut_regrade(seed), f"gen-{seed}"
        else:
            raise ValueError(f"unknown grade family {family!r}; expected 'photo' or 'lut'")
        strength = strength_for_shift(pixels, regrade, low, high, rng)
        if strength is not None:
            break
    else:
        raise ValueError(f"{case_id}: no edit reached a {bucket} shift ({low}-{high}) in {max_tries} tries")
    alpha = soft[..., None]
    edited = regrade(photo, strength).astype(np.float32)
    composite = np.rint(alpha * edited + (1.0 - alpha) * photo.astype(np.float32)).astype(np.uint8)
    return Composite(case_id, composite, soft, photo, f"{name} @ {strength:.3f}", bucket)


@dataclass(frozen=True)
class PastedComposite:
    """An object of one photo on another: no ground truth."""

    id: str
    composite: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray  # (H, W) float32 in [0, 1]


def pasted_composite(
    case_id: str,
    foreground: np.ndarray,
    object_mask: np.ndarray,
    background: np.ndarray,
    rng: np.random.Generator,
    area: tuple[float, float] = OBJECT_AREA,
) -> PastedComposite:
    """Cut the object ``object_mask`` out of ``foreground`` and paste it, scaled to ``area`` of the
    background, at a random place on ``background`` (feathered edge)."""
    height, width = background.shape[:2]
    box, scale, x, y = _scaled_object(object_mask, height, width, rng, area)
    w = max(1, round((box[2] - box[0]) * scale))
    h = max(1, round((box[3] - box[1]) * scale))
    pixels = np.asarray(Image.fromarray(foreground).crop(box).resize((w, h), Image.Resampling.LANCZOS))
    shape = Image.fromarray(np.where(np.asarray(object_mask) > 0, 255, 0).astype(np.uint8)).crop(box)
    hard = np.zeros((height, width), dtype=bool)
    hard[y : y + h, x : x + w] = np.asarray(shape.resize((w, h), Image.Resampling.BILINEAR)) >= 128
    soft = feather(hard)
    pasted = background.astype(np.float32).copy()
    pasted[y : y + h, x : x + w] = pixels
    alpha = soft[..., None]
    composite = np.rint(alpha * pasted + (1.0 - alpha) * background.astype(np.float32)).astype(np.uint8)
    return PastedComposite(case_id, composite, soft)


def lab_stats_distance(image: np.ndarray, mask: np.ndarray) -> float:
    """How far the foreground's mean Lab colour is from the background's (Euclidean, CIE76 units).

    Foreground: mask > 0.5; background: mask < 0.05 (the feathered edge counts as neither).
    """
    fg = foreground_pixels(image, mask)
    bg = foreground_pixels(image, (np.asarray(mask) < 0.05).astype(np.float32))
    if len(fg) == 0 or len(bg) == 0:
        raise ValueError("lab_stats_distance needs both foreground and background pixels")
    fg_lab = rgb2lab(fg[:, None, :].astype(np.float64) / 255.0)[:, 0]
    bg_lab = rgb2lab(bg[:, None, :].astype(np.float64) / 255.0)[:, 0]
    return float(np.linalg.norm(fg_lab.mean(axis=0) - bg_lab.mean(axis=0)))


def assign_buckets(count: int) -> list[str]:
    """``count`` bucket names in turn (mild, medium, strong, mild, ...): equal buckets, give or take one."""
    names: Sequence[str] = [b[0] for b in BUCKETS]
    return [names[i % len(names)] for i in range(count)]


__all__ = [
    "BUCKETS",
    "PastedComposite",
    "assign_buckets",
    "bucket_range",
    "feather",
    "foreground_pixels",
    "graded_composite",
    "lab_stats_distance",
    "lut_regrade",
    "mean_delta_e",
    "pasted_composite",
    "photo_regrade",
    "place_mask",
    "strength_for_shift",
]
