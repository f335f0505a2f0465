"""Checks of in-memory harmonization inputs: the composite, its (soft) mask, a reference mask.

Masks are soft: any value in [0, 1] is a blend weight (feathered edges, anti-aliased cut-outs), from
bool, uint8, uint16 or float arrays. An RGBA composite may carry its mask as its alpha.

Every problem is a ``ssh_model.errors.HarmonizeInputError`` raised here, where it is found, with a
stable ``reason``: "bad_array", "no_mask", "mask_size", "empty_mask", "full_mask", "empty_reference".
Callers (the batch job, the CLI) report it as it is; none re-validates.
"""

from __future__ import annotations

import numpy as np

from ssh_model.errors import HarmonizeInputError


def _bad(reason: str, message: str) -> HarmonizeInputError:
    return HarmonizeInputError(reason, message)


def as_mask(
    mask: np.ndarray, shape: tuple[int, int] | None = None, name: str = "mask", image_name: str = "the image"
) -> np.ndarray:
    """An in-memory mask as float32 (H, W) in [0, 1]; soft values (feathered edges) are kept.

    Accepts bool, uint8 (0-255), uint16 (0-65535), other integers in 0-255, or floats in [0, 1];
    shape (H, W) or (H, W, 1). ``shape`` (H, W), when given, must match. A float32 mask already in
    range is returned as is (not copied): treat the result as read-only. Raises
    ``HarmonizeInputError`` ("bad_array", or "mask_size" when the shape differs).
    """
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise _bad("bad_array", f"{name} must be (H, W) or (H, W, 1), got shape {mask.shape}")
    if shape is not None and mask.shape != tuple(shape):
        raise _bad(
            "mask_size",
            f"{name} is {mask.shape[1]}x{mask.shape[0]} but {image_name} is {shape[1]}x{shape[0]} (width x height)",
        )
    if mask.dtype == np.bool_:
        return mask.astype(np.float32)
    if mask.dtype == np.uint8:
        return mask.astype(np.float32) / 255.0
    if mask.dtype == np.uint16:
        return (mask.astype(np.float32) / 65535.0).astype(np.float32)
    if np.issubdtype(mask.dtype, np.integer):
        low, high = int(mask.min()), int(mask.max())
        if low < 0 or high > 255:
            raise _bad("bad_array", f"integer {name} values must be in 0-255, got {low}..{high}")
        if high == 1:
            raise _bad("bad_array", f"integer {name} with values 0/1 is ambiguous: pass bool or 0-255 values")
        return mask.astype(np.float32) / 255.0
    if np.issubdtype(mask.dtype, np.floating):
        values = mask if mask.dtype == np.float32 else mask.astype(np.float32)
        low, high = float(values.min()), float(values.max())  # NaN and inf show up here too
        if not (np.isfinite(low) and np.isfinite(high)):
            raise _bad("bad_array", f"{name} has NaN or infinite values")
        if low < -1e-6 or high > 1.0 + 1e-6:
            raise _bad("bad_array", f"float {name} values must be in [0, 1], got {low:g}..{high:g}")
        return values if low >= 0.0 and high <= 1.0 else np.clip(values, 0.0, 1.0)
    raise _bad("bad_array", f"{name} dtype {mask.dtype} is not supported (bool, uint8, uint16 or float)")


# A mask value below this is "background" (0 at 8 bits); a mask whose maximum is below it is empty.
MASK_EPSILON = 0.5 / 255.0


def split_alpha(image: np.ndarray, name: str = "composite") -> tuple[np.ndarray, np.ndarray | None]:
    """uint8 (H, W, 3) or (H, W, 4) -> (RGB (H, W, 3), its alpha as float32 (H, W) in [0, 1], or None
    when there is no alpha channel or it is opaque everywhere)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
        raise _bad("bad_array", f"{name} must be uint8 (H, W, 3) or (H, W, 4), got {image.dtype} {image.shape}")
    if image.shape[2] == 3:
        return image, None
    alpha = image[..., 3]
    rgb = np.ascontiguousarray(image[..., :3])
    return rgb, (None if int(alpha.min()) == 255 else alpha.astype(np.float32) / 255.0)


def composite_and_mask(
    composite: np.ndarray, mask: np.ndarray | None, name: str = "composite", mask_name: str = "mask"
) -> tuple[np.ndarray, np.ndarray]:
    """The composite's RGB (H, W, 3) and its mask: ``mask`` when given (an alpha channel is then ignored),
    else the composite's own alpha (an RGBA cut-out pasted on its background). Raises "no_mask" when
    neither is there."""
    rgb, alpha = split_alpha(composite, name)
    if mask is not None:
        return rgb, mask
    if alpha is None:
        raise _bad(
            "no_mask",
            f"no mask given and {name} has no transparency (alpha) to use as one: pass a "
            "mask, or an RGBA composite whose alpha is the foreground",
        )
    return rgb, alpha


def check_composite(
    composite: np.ndarray,
    mask: np.ndarray,
    background: np.ndarray | None = None,
    allow_full: bool = False,
    names: tuple[str, str] = ("composite", "mask"),
) -> np.ndarray:
    """Validate a harmonization input and return its mask as float32 (H, W) in [0, 1].

    Every problem is a ``HarmonizeInputError`` raised here and nowhere else: "bad_array" (types,
    shapes, value ranges), "mask_size", "empty_mask", "full_mask".

    Args:
        composite: uint8 (H, W, 3).
        mask: (H, W) bool / uint8 0-255 / uint16 / float 0-1 (see ``as_mask``); must select some pixel.
        background: None or uint8 (H', W', 3), any size.
        allow_full: accept a mask that covers every pixel (only meaningful with a ``background``).
        names: how messages name the composite and the mask (e.g. their URLs).
    """
    composite_name, mask_name = names
    composite = np.asarray(composite)
    if composite.dtype != np.uint8 or composite.ndim != 3 or composite.shape[2] != 3:
        raise _bad("bad_array", f"{composite_name} must be uint8 (H, W, 3), got {composite.dtype} {composite.shape}")
    weights = as_mask(mask, shape=composite.shape[:2], name=mask_name, image_name=composite_name)
    if float(weights.max()) < MASK_EPSILON:
        raise _bad("empty_mask", f"{mask_name} is empty: it selects no foreground pixel")
    if not allow_full and float(weights.min()) >= MASK_EPSILON:
        raise _bad(
            "full_mask",
            f"{mask_name} covers the whole image: no background pixel is left to match (pass a separate background image)",
        )
    if background is not None:
        background = np.asarray(background)
        if background.dtype != np.uint8 or background.ndim != 3 or background.shape[2] != 3:
            raise _bad("bad_array", f"background must be uint8 (H, W, 3), got {background.dtype} {background.shape}")
        if min(background.shape[:2]) < 1:
            raise _bad("bad_array", "background is empty")
    return weights


def check_reference(
    reference_mask: np.ndarray, shape: tuple[int, int], name: str = "reference mask", image_name: str = "the image"
) -> np.ndarray:
    """A reference mask (the part of the background to match) as float32 (H, W) in [0, 1], checked against
    its image's ``shape`` (H, W): "mask_size", "bad_array", or "empty_reference" when it selects nothing."""
    weights = as_mask(reference_mask, shape=shape, name=name, image_name=image_name)
    if float(weights.max()) < MASK_EPSILON:
        raise _bad("empty_reference", f"{name} is empty: it selects no pixel to match")
    return weights


__all__ = ["MASK_EPSILON", "as_mask", "check_composite", "check_reference", "composite_and_mask", "split_alpha"]
