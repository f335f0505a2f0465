"""Dual-LUT triplets: SSH's self-supervised training examples from one natural photo.

From one photo we cut two overlapping square crops, the content (crop 1) and the reference
(crop 2), and grade them with two different LUTs alpha and beta (docs/method.md):

    content_a   = LUT_alpha(crop 1)      reference_a = LUT_alpha(crop 2)
    reference_b = LUT_beta(crop 2)       content_b   = LUT_beta(crop 1)   (the pseudo ground truth)

Crop sampling (our choices; the paper leaves them open):
- square crops, side ``round(u * short side)`` with ``u`` uniform in ``SCALE_RANGE`` (0.5 .. 1.0 of
  the photo's short side), but never below ``crop_size / 2`` (the crop is upscaled at most 2x);
  photos whose short side is below ``crop_size // 2`` are rejected;
- the content crop at a uniform random position; the reference crop with its own side, at a
  random position where the two overlap by at least ``MIN_OVERLAP`` of the smaller crop's area
  (rejection sampling; after ``MAX_TRIES`` misses it is centred on the content crop, which always
  qualifies);
- each crop flipped horizontally with probability 1/2;
- crop -> resize to ``crop_size`` (Pillow, antialiased bilinear) -> flip: ``crop_resize``.

A second layout, ``"region"``, shows the network what ``harmonize`` shows it on a composite: a
square scene cut from the photo (as a crop above, at twice ``crop_size``), a soft random blob in it
as the foreground (``composites.blob_mask``, ``REGION_AREA`` of the scene), then

- the content: the blob's box with ``harmonize``'s context margin, grown to a square, its pixels
  outside the blob's solid core refilled from the core (push-pull), as ``harmonize`` does;
- the reference: the whole scene with the blob refilled from the background around it
  (``regions.background_reference``).

Content and reference are disjoint regions of one scene, as a composite's foreground and background
are, instead of overlapping crops; the two LUTs are applied after the views are made, so
``content_b`` is exactly ``content_a`` re-graded. The hope was fewer over-corrections (two regions
of one photo under one grade differ in colour by their content alone); measured in
``benchmarks/bench_recipe.py`` (round 4 in the README) it did not help at a few CPU minutes, so
build-triplets keeps it as an option (``region_fraction``, default 0). The shipped model uses it for
half its triplets with ``outline``: the foreground takes the shape of a real object's mask (BSDS500
segments) instead of a blob.

``draw_luts`` picks a triplet's two grades; with ``natural_fraction`` the second is sometimes the
identity, so the reference and the pseudo ground truth keep the photo's own colours, as the
background of a user's composite does.

Everything random comes from the ``rng`` passed in, in a fixed order, so a triplet is a pure
function of the photo, the two LUTs, the generator's state and ``crop_size``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ssh_model.composites import blob_mask
from ssh_model.lut import LUT, apply_lut, check_image, identity_lut
from ssh_model.quality_set import feather, place_mask
from ssh_model.regions import CORE_MASK, Box, background_reference, foreground_box, push_pull_fill, with_margin

SCALE_RANGE = (0.5, 1.0)
MIN_OVERLAP = 0.25
MAX_TRIES = 64
MIN_CROP_SIZE = 8
LAYOUTS = ("crops", "region")
REGION_AREA = (0.05, 0.4)  # of the scene, the blob's share


@dataclass(frozen=True)
class Triplet:
    """One training example: four uint8 (S, S, 3) images, where they came from, and the two LUT names."""

    content_a: np.ndarray
    reference_a: np.ndarray
    reference_b: np.ndarray
    content_b: np.ndarray
    content_box: Box
    reference_box: Box
    content_flip: bool
    reference_flip: bool
    lut_a: str
    lut_b: str
    layout: str = "crops"


def crop_resize(image: np.ndarray, box: Box, size: int, flip: bool) -> np.ndarray:
    """Cut ``box`` (x0, y0, x1, y1) out of ``image`` (H, W, 3), resize it to ``size`` x ``size``, maybe flip.

    Resizing is Pillow's bilinear filter, antialiased when reducing; a box already of that size is
    copied unchanged. Returns a new C-contiguous uint8 (size, size, 3) array.
    """
    image = check_image(image)
    height, width = image.shape[:2]
    x0, y0, x1, y1 = (int(v) for v in box)
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError(f"crop box {box} is empty or outside the {width}x{height} image")
    if size < 1:
        raise ValueError(f"crop size must be positive, got {size}")
    crop = image[y0:y1, x0:x1]
    if crop.shape[:2] != (size, size):
        crop = np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((size, size), Image.Resampling.BILINEAR))
    if flip:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop)


def box_overlap(a: Box, b: Box) -> float:
    """Intersection area over the smaller box's area (0 when disjoint, 1 when one contains the other)."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return width * height / smaller


def _crop_side(rng: np.random.Generator, short: int, crop_size: int) -> int:
    side = round(rng.uniform(*SCALE_RANGE) * short)
    return int(min(short, max(side, (crop_size + 1) // 2, 1)))


def _place(rng: np.random.Generator, side: int, width: int, height: int) -> Box:
    x0 = int(rng.integers(0, width - side + 1))
    y0 = int(rng.integers(0, height - side + 1))
    return x0, y0, x0 + side, y0 + side


def sample_boxes(rng: np.random.Generator, width: int, height: int, crop_size: int) -> tuple[Box, Box]:
    """The content and reference boxes: square, inside the image, overlapping by >= ``MIN_OVERLAP``."""
    short = min(width, height)
    content = _place(rng, _crop_side(rng, short, crop_size), width, height)
    side = _crop_side(rng, short, crop_size)
    for _ in range(MAX_TRIES):
        reference = _place(rng, side, width, height)
        if box_overlap(content, reference) >= MIN_OVERLAP:
            return content, reference
    cx, cy = (content[0] + content[2]) // 2, (content[1] + content[3]) // 2
    x0 = min(max(cx - side // 2, 0), width - side)
    y0 = min(max(cy - side // 2, 0), height - side)
    return content, (x0, y0, x0 + side, y0 + side)


def _square_box(box: Box, side_limit: int) -> Box:
    """``box`` grown to a square around its centre, shifted to stay inside a ``side_limit`` square."""
    x0, y0, x1, y1 = box
    side = min(max(x1 - x0, y1 - y0), side_limit)
    left = min(max((x0 + x1 - side) // 2, 0), side_limit - side)
    top = min(max((y0 + y1 - side) // 2, 0), side_limit - side)
    return left, top, left + side, top + side


def region_views(
    image: np.ndarray, rng: np.random.Generator, crop_size: int, outline: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, Box, Box, bool]:
    """The ``"region"`` layout's (content, reference, content box, scene box, flip); see the module docstring.

    Content and reference are uint8 (S, S, 3) with S = ``crop_size``; the boxes are in source pixels.
    ``outline``: an object's hard mask (any size) to use as the foreground's shape, placed and scaled on
    the scene (``quality_set.place_mask``) and feathered; None: a random soft blob.
    """
    height, width = image.shape[:2]
    scene_box = _place(rng, _crop_side(rng, min(width, height), crop_size), width, height)
    flip = bool(rng.random() < 0.5)
    scene_size = 2 * crop_size
    scene = crop_resize(image, scene_box, scene_size, flip)  # (2S, 2S, 3)
    if outline is None:
        mask = blob_mask(scene_size, scene_size, rng, REGION_AREA)  # (2S, 2S) float32 in [0, 1]
    else:
        mask = feather(place_mask(outline, scene_size, scene_size, rng, REGION_AREA))
    box = _square_box(with_margin(foreground_box(mask), scene_size, scene_size), scene_size)
    content = crop_resize(scene, box, crop_size, flip=False)  # (S, S, 3)
    content_mask = np.asarray(
        Image.fromarray(mask).resize((crop_size, crop_size), Image.Resampling.BILINEAR, box=box)
    )  # (S, S)
    core = content_mask >= CORE_MASK
    if core.any() and not core.all():
        content = push_pull_fill(content, core)
    reference = background_reference(scene, mask, size=crop_size)  # (S, S, 3)
    scale = (scene_box[2] - scene_box[0]) / scene_size
    x0, x1 = (scene_size - box[2], scene_size - box[0]) if flip else (box[0], box[2])
    content_box = (
        scene_box[0] + round(x0 * scale),
        scene_box[1] + round(box[1] * scale),
        scene_box[0] + round(x1 * scale),
        scene_box[1] + round(box[3] * scale),
    )
    return content, reference, content_box, scene_box, flip


def draw_layout(rng: np.random.Generator, region_fraction: float) -> str:
    """ "region" with probability ``region_fraction``, else "crops"; draws nothing from ``rng`` when the
    fraction is 0, so builds without region triplets are the same as before the layout existed."""
    return "region" if region_fraction > 0 and rng.random() < region_fraction else "crops"


def draw_luts(rng: np.random.Generator, bank: Sequence[LUT], natural_fraction: float = 0.0) -> tuple[LUT, LUT]:
    """The triplet's two grades: two different grades of ``bank``, or, with probability ``natural_fraction``,
    a grade of the bank and the identity as the second (the reference and the pseudo ground truth keep
    the photo's own colours, as the background of a user's composite does). Draws the extra number only
    when the fraction is > 0, so builds without it are the same as before it existed."""
    first, second = (int(i) for i in rng.choice(len(bank), size=2, replace=False))
    if natural_fraction > 0 and rng.random() < natural_fraction:
        return bank[first], identity_lut(bank[first].size)
    return bank[first], bank[second]


def make_triplet(
    image: np.ndarray,
    lut_a: LUT,
    lut_b: LUT,
    rng: np.random.Generator,
    crop_size: int = 256,
    layout: str = "crops",
    outline: np.ndarray | None = None,
) -> Triplet:
    """One dual-LUT triplet from ``image`` uint8 (H, W, 3); see the module docstring for the sampling.

    Args:
        layout: ``"crops"`` (two overlapping crops, SSH's) or ``"region"`` (a foreground region and the
            background around it, as ``harmonize`` sees a composite).
        outline: for the region layout, an object mask whose shape the foreground takes (None: a blob).

    Raises ValueError when ``lut_a`` and ``lut_b`` are the same LUT (same object, same name or
    same table), when the photo's short side is below ``crop_size // 2`` or for an unknown layout.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown triplet layout {layout!r}; expected one of {LAYOUTS}")
    image = check_image(image)
    if crop_size < MIN_CROP_SIZE:
        raise ValueError(f"crop_size must be at least {MIN_CROP_SIZE}, got {crop_size}")
    if (
        lut_a is lut_b
        or (lut_a.name and lut_a.name == lut_b.name)
        or (
            lut_a.table.shape == lut_b.table.shape
            and np.array_equal(lut_a.table, lut_b.table)
            and lut_a.domain_min == lut_b.domain_min
            and lut_a.domain_max == lut_b.domain_max
        )
    ):
        raise ValueError(f"a triplet needs two different LUTs, got {lut_a.name or '<unnamed>'} twice")
    height, width = image.shape[:2]
    if min(height, width) < crop_size // 2:
        raise ValueError(
            f"photo of {width}x{height} px is too small for {crop_size} px crops: "
            f"its short side must be at least {crop_size // 2} px"
        )
    if layout == "region":
        content, reference, content_box, reference_box, content_flip = region_views(image, rng, crop_size, outline)
        reference_flip = content_flip
    else:
        content_box, reference_box = sample_boxes(rng, width, height, crop_size)
        content_flip, reference_flip = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
        content = crop_resize(image, content_box, crop_size, content_flip)  # (S, S, 3)
        reference = crop_resize(image, reference_box, crop_size, reference_flip)  # (S, S, 3)
    return Triplet(
        content_a=apply_lut(content, lut_a),
        reference_a=apply_lut(reference, lut_a),
        reference_b=apply_lut(reference, lut_b),
        content_b=apply_lut(content, lut_b),
        content_box=content_box,
        reference_box=reference_box,
        content_flip=content_flip,
        reference_flip=reference_flip,
        lut_a=lut_a.name,
        lut_b=lut_b.name,
        layout=layout,
    )
