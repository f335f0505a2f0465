"""The regions the network sees: boxes and margins, area resizing, push-pull refill, the reference.

Harmonization (``ssh_model.inference``) and triplet making (``ssh_model.triplets``) build their
network inputs with these, so a training example and a user's composite look alike to the model:

- ``foreground_box`` / ``with_margin``: the foreground's bounding box and the context around it;
- ``net_shape`` / ``resize_area``: the low-resolution shape (long side ``size``, aspect kept) and
  an area filter under which a mask pixel is 0 exactly when every source pixel it covers is 0;
- ``push_pull_fill``: refill unknown pixels from known ones only;
- ``background_reference``: the composite's background with the foreground refilled from it;
  ``region_reference``: only a chosen region of a picture (a reference mask), the rest refilled.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ssh_model.errors import HarmonizeInputError
from ssh_model.inputs import MASK_EPSILON

NET_SIZE = 256
CONTEXT_MARGIN = 0.1  # of the foreground box's long side, on each side
MIN_NET_SIDE = 16  # the shorter side of a network input never goes below this
CORE_MASK = 0.5  # low-res mask value from which a pixel counts as solid foreground for the fit

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1), exclusive ends


def foreground_box(weights: np.ndarray) -> Box:
    """(x0, y0, x1, y1), exclusive ends, of the pixels with mask >= ``MASK_EPSILON``."""
    selected = weights >= MASK_EPSILON
    rows, cols = np.flatnonzero(selected.any(axis=1)), np.flatnonzero(selected.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def with_margin(box: Box, width: int, height: int) -> Box:
    x0, y0, x1, y1 = box
    margin = int(round(CONTEXT_MARGIN * max(x1 - x0, y1 - y0)))
    return max(0, x0 - margin), max(0, y0 - margin), min(width, x1 + margin), min(height, y1 + margin)


def net_shape(width: int, height: int, size: int) -> tuple[int, int]:
    """(w, h) with the long side ``size`` and the aspect kept (short side at least ``MIN_NET_SIDE``)."""
    scale = size / max(width, height)
    short_side = min(size, MIN_NET_SIDE)
    return max(short_side, int(round(width * scale))), max(short_side, int(round(height * scale)))


def resize_area(image: Image.Image, shape: tuple[int, int], box: Box | None = None) -> np.ndarray:
    """Area-resample a Pillow image (or its ``box``) to ``shape`` (w, h) -> a writable ndarray.

    An integer block reduction (``reducing_gap``) then a BOX filter: both are area averages, so a
    low-resolution pixel is exactly 0 in a mask when every source pixel it covers is 0, and images
    and masks resized with the same arguments cover the same source pixels.
    """
    return np.array(image.resize(shape, Image.Resampling.BOX, box=box, reducing_gap=2.0))


def _pool2(values: np.ndarray) -> np.ndarray:
    """2x2 sum pooling of (h, w, ...) with zero padding for odd sizes."""
    h, w = values.shape[:2]
    padded = np.zeros(((h + 1) // 2 * 2, (w + 1) // 2 * 2, *values.shape[2:]), values.dtype)
    padded[:h, :w] = values
    return padded[0::2, 0::2] + padded[1::2, 0::2] + padded[0::2, 1::2] + padded[1::2, 1::2]


def _upsample(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of float32 (h, w, 3) to (H, W) = ``shape``."""
    planes = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(values[..., c])).resize((shape[1], shape[0]), Image.Resampling.BILINEAR)
        )
        for c in range(values.shape[2])
    ]
    return np.stack(planes, axis=2)


def push_pull_fill(image: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Fill the pixels of ``image`` (h, w, 3) where ``known`` (h, w) is False from the known ones.

    Push: a pyramid of 2x2 sums of known colours and counts. Pull: from the coarsest level down,
    unknown pixels take the bilinearly upsampled coarser estimate. Known pixels keep their values
    exactly, and unknown pixels are computed from known pixels only.
    """
    if not known.any():
        raise ValueError("nothing to fill from: no known pixel")
    colours = image.astype(np.float32) * known[..., None]
    counts = known.astype(np.float32)[..., None]
    levels = [(colours, counts)]
    while min(colours.shape[:2]) > 1:
        colours, counts = _pool2(colours), _pool2(counts)
        levels.append((colours, counts))
    estimate = None
    for colours, counts in reversed(levels):
        mean = colours / np.maximum(counts, 1e-12)
        if estimate is not None:
            mean = np.where(counts > 0, mean, _upsample(estimate, mean.shape[:2]))
        estimate = mean.astype(np.float32)
    filled = np.where(known[..., None], image.astype(np.float32), estimate)
    return np.clip(np.rint(filled), 0, 255).astype(np.uint8)


def background_reference(
    composite: np.ndarray,
    weights: np.ndarray,
    size: int = NET_SIZE,
    picture: Image.Image | None = None,
    mask_picture: Image.Image | None = None,
) -> np.ndarray:
    """uint8 (h, w, 3): the composite's background at low resolution, the foreground refilled (module doc).

    Args:
        composite: uint8 (H, W, 3).
        weights: float32 (H, W) mask in [0, 1].
        size: the long side of the result.
        picture, mask_picture: ``Image.fromarray`` of the composite and of the weights when the caller
            has them already.
    """
    height, width = weights.shape
    shape = net_shape(width, height, size)
    picture = Image.fromarray(composite) if picture is None else picture
    mask_picture = Image.fromarray(weights) if mask_picture is None else mask_picture
    small = resize_area(picture, shape)  # (h, w, 3)
    # Any mask value above 0, even below MASK_EPSILON, marks a pixel as touched: the safe side.
    touched = resize_area(mask_picture, shape) > 0  # (h, w)
    grown = _grow(touched)  # one more pixel of safety around what the filter footprint reached
    if grown.all():
        grown = touched  # a thin background: keep every clean pixel there is
    if grown.all():
        raise HarmonizeInputError(
            "full_mask",
            "the background left around the mask is too small to see at network resolution: pass a background image",
        )
    return push_pull_fill(small, ~grown)


def _grow(selected: np.ndarray) -> np.ndarray:
    """``selected`` (h, w) bool grown by one pixel in the four directions."""
    grown = selected.copy()
    grown[1:] |= selected[:-1]
    grown[:-1] |= selected[1:]
    grown[:, 1:] |= selected[:, :-1]
    grown[:, :-1] |= selected[:, 1:]
    return grown


def region_reference(
    image: np.ndarray, region: np.ndarray, size: int = NET_SIZE, foreground: np.ndarray | None = None
) -> np.ndarray:
    """uint8 (h, w, 3): the part of ``image`` that ``region`` selects, at low resolution, the rest refilled.

    The reference a user chooses (``reference_mask``): the region's bounding box is area-downscaled
    (long side ``size``), the low-resolution pixels that lie mostly inside the region are kept, and the
    others are refilled from them by push-pull, so every colour the style encoder sees comes from the
    region. Pixels the ``foreground`` touches never count as the region's.

    Args:
        image: uint8 (H, W, 3): the composite, or the separate background photo.
        region: float32 (H, W) in [0, 1], the chosen pixels (already checked to select some).
        size: the long side of the result.
        foreground: float32 (H, W) foreground weights when ``image`` is the composite itself.
    """
    if foreground is not None:
        region = np.where(foreground > 0, np.float32(0), region)
    if float(region.max()) < MASK_EPSILON:
        raise HarmonizeInputError("empty_reference", "the reference mask selects no background pixel")
    box = foreground_box(region)
    shape = net_shape(box[2] - box[0], box[3] - box[1], size)
    small = resize_area(Image.fromarray(image), shape, box)  # (h, w, 3)
    inside = resize_area(Image.fromarray(region), shape, box)  # (h, w) float32
    touched = np.zeros(inside.shape, bool)  # low-resolution pixels the foreground reaches
    if foreground is not None:
        touched = resize_area(Image.fromarray(foreground), shape, box) > 0
    known = (inside >= CORE_MASK) & ~_grow(touched)
    if not known.any():  # a thin region: every low-resolution pixel it reaches
        known = (inside > 0) & ~touched
    if not known.any():
        raise HarmonizeInputError("empty_reference", "the reference region is too small to see at network resolution")
    return small if known.all() else push_pull_fill(small, known)
