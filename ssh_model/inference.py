"""Full-resolution harmonization: the network at low resolution, a global colour transform at full.

    out = harmonize(composite, mask, model)            # any size, any aspect ratio

Steps (see ssh-method.md, "Full-resolution inference"):
1. Validate: composite uint8 (H, W, 3); mask (H, W) bool / uint8 0-255 / float 0-1 of the same
   size, neither empty nor covering everything (a full mask is accepted with a ``background``).
2. Network inputs at low resolution (long side = ``size``, aspect kept; the network pads to x16):
   - ``content``: the foreground's bounding box, padded by ``CONTEXT_MARGIN`` of its long side,
     area-downscaled (BOX filter);
   - ``reference``: background pixels only. With a ``background`` photo: that photo, whole.
     Without: the whole composite, downscaled with the same filter as the mask, after which every
     low-resolution pixel whose footprint touches the foreground (mask > 0) is thrown away and
     refilled by push-pull interpolation from the clean pixels around it. The foreground's colours
     therefore cannot reach the reference, while the reference stays a natural-looking picture of
     the background (no hard grey hole for the style encoder to see).
3. Fit the 17-term polynomial colour transform (``ssh_model.colour``) from the network's input to
   its output, in linear RGB, on the FOREGROUND pixels of the content only (low-res mask >= 0.5,
   weighted by the mask; any masked pixel when none is that opaque). The release fitted on every
   pixel of the crop, letting the background steer the foreground's transform.
4. Bake the transform into a 33^3 LUT over sRGB and apply it with ``ssh_model.lut.apply_lut``
   (Pillow ``Color3DLUT``, threaded) to the foreground's bounding box only.
5. Blend over the composite with the soft mask in uint16 fixed point (alpha quantised to 1/256):
   pixels where the mask is 0 come back bit-identical.
   With the model on a GPU, steps 4-5 run there instead (``recolour_on_device``: trilinear
   ``grid_sample`` and a float blend; within one level of the CPU path).
Any spatially-varying change the network makes is dropped at full resolution, as in the release.

A model that predicts its colour transform (``ColourNet``, ``predicts_transform``) skips steps 3-4:
it sees the content with its background margin refilled from the foreground (push-pull, as the
reference is refilled from the background), and its transform is applied to the full-resolution
foreground directly, in tiles of rows, on the model's device (``recolour_with_transform``), then
blended as in 5.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ssh_model.colour import ColourTransform, fit_colour_transform
from ssh_model.images import MASK_EPSILON, check_composite, read_image, read_mask

logger = logging.getLogger(__name__)

NET_SIZE = 256
LUT_SIZE = 33
CONTEXT_MARGIN = 0.1  # of the foreground box's long side, on each side
MIN_NET_SIDE = 16  # the shorter side of a network input never goes below this
CORE_MASK = 0.5  # low-res mask value from which a pixel counts as solid foreground for the fit

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1), exclusive ends


@dataclass(frozen=True, eq=False)
class Harmonized:
    """The result and everything that led to it (for tests, debugging and reports)."""

    image: np.ndarray  # (H, W, 3) uint8
    transform: ColourTransform | np.ndarray  # fitted, or a ColourNet's coefficients (42, G, G)
    content: np.ndarray  # (h, w, 3) uint8, what the network re-rendered
    content_mask: np.ndarray  # (h, w) float32, the foreground within ``content``
    reference: np.ndarray  # (h', w', 3) uint8, background pixels only
    network_output: np.ndarray  # (h, w, 3) float32 in [0, 1]
    content_box: Box  # (x0, y0, x1, y1) in composite pixels
    foreground_box: Box  # (x0, y0, x1, y1): where the LUT was applied


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


def _resize(image: Image.Image, shape: tuple[int, int], box: Box | None = None) -> np.ndarray:
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
    planes = [np.asarray(Image.fromarray(np.ascontiguousarray(values[..., c])).resize(
        (shape[1], shape[0]), Image.Resampling.BILINEAR)) for c in range(values.shape[2])]
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


def background_reference(composite: np.ndarray, weights: np.ndarray, size: int = NET_SIZE,
                         picture: Image.Image | None = None,
                         mask_picture: Image.Image | None = None) -> np.ndarray:
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
    small = _resize(picture, shape)  # (h, w, 3)
    # Any mask value above 0, even below MASK_EPSILON, marks a pixel as touched: the safe side.
    touched = _resize(mask_picture, shape) > 0  # (h, w)
    # One more pixel of safety around what the filter footprint reached.
    grown = touched.copy()
    grown[1:] |= touched[:-1]
    grown[:-1] |= touched[1:]
    grown[:, 1:] |= touched[:, :-1]
    grown[:, :-1] |= touched[:, 1:]
    if grown.all():
        grown = touched  # a thin background: keep every clean pixel there is
    if grown.all():
        raise ValueError("the background is too small to see at network resolution: pass a background image")
    return push_pull_fill(small, ~grown)


def _model_device_dtype(model):
    import torch

    parameter = next(iter(model.parameters()), None)
    if parameter is None:
        return torch.device("cpu"), torch.float32
    return parameter.device, parameter.dtype if parameter.dtype.is_floating_point else torch.float32


def run_network(model, content: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The model's re-rendering of ``content`` (h, w, 3) uint8 in the look of ``reference``, as float32 in
    [0, 1] (h, w, 3). Runs in eval mode under ``torch.inference_mode`` on the model's device; the model's
    training flag is restored afterwards."""
    import torch

    from ssh_model.network import images_to_tensor

    device, dtype = _model_device_dtype(model)
    content_t = images_to_tensor(content).to(device=device, dtype=dtype)  # (1, 3, h, w) in [-1, 1]
    reference_t = images_to_tensor(reference).to(device=device, dtype=dtype)  # (1, 3, h', w')
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            output = model(content_t, reference_t)  # (1, 3, h, w) in [-1, 1]
    finally:
        model.train(was_training)
    if isinstance(output, tuple | list):
        output = output[0]
    if tuple(output.shape) != tuple(content_t.shape):
        raise ValueError(f"the model returned shape {tuple(output.shape)} for content "
                         f"{tuple(content_t.shape)}")
    output = ((output[0].float() + 1.0) * 0.5).clamp_(0.0, 1.0)  # (3, h, w)
    return output.permute(1, 2, 0).cpu().numpy().astype(np.float32)


def fit_foreground_transform(content: np.ndarray, output: np.ndarray,
                             content_mask: np.ndarray) -> ColourTransform:
    """The colour transform from ``content`` (uint8) to ``output`` (float [0, 1]) on foreground pixels."""
    core = content_mask >= CORE_MASK
    if not core.any():
        core = content_mask >= MASK_EPSILON
    return fit_colour_transform(content[core].astype(np.float64) / 255.0, output[core], content_mask[core])


def blend_region(composite: np.ndarray, recoloured: np.ndarray, weights: np.ndarray, box: Box) -> np.ndarray:
    """The composite with ``recoloured`` (the box's pixels) blended in by the soft mask (uint16 math)."""
    x0, y0, x1, y1 = box
    out = composite.copy()
    alpha = np.rint(weights[y0:y1, x0:x1] * 256.0).astype(np.uint16)[..., None]  # (h, w, 1) in 0..256
    mixed = recoloured.astype(np.uint16)
    mixed *= alpha
    original = composite[y0:y1, x0:x1].astype(np.uint16)
    original *= 256 - alpha
    mixed += original
    mixed += 128
    mixed >>= 8  # at most (255 * 256 + 128) >> 8 = 255: no overflow
    out[y0:y1, x0:x1] = mixed
    return out


def recolour_on_device(composite: np.ndarray, weights: np.ndarray, lut, box: Box, device) -> np.ndarray:
    """Steps 4-5 with torch on ``device`` (trilinear ``apply_lut_torch``, float blend): the composite with
    the box's pixels graded by ``lut`` and blended in by the soft mask. On a GPU this replaces Pillow's
    single-threaded pass over a 4K image; pixels where the mask is 0 come back bit-identical."""
    import torch

    from ssh_model.lut import apply_lut_torch, luts_to_tensor

    x0, y0, x1, y1 = box
    region = torch.from_numpy(np.ascontiguousarray(composite[y0:y1, x0:x1])).to(device)  # (h, w, 3) uint8
    image = region.permute(2, 0, 1)[None].float().div_(255.0)  # (1, 3, h, w) in [0, 1]
    graded = apply_lut_torch(image, luts_to_tensor([lut]).to(device))  # (1, 3, h, w)
    alpha = torch.from_numpy(np.ascontiguousarray(weights[y0:y1, x0:x1])).to(device)  # (h, w)
    mixed = torch.lerp(image[0], graded[0], alpha)  # (3, h, w)
    out = composite.copy()
    out[y0:y1, x0:x1] = mixed.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return out


def recolour_with_transform(composite: np.ndarray, weights: np.ndarray, coefficients, box: Box, content_box: Box,
                            tile_pixels: int = 1 << 20) -> np.ndarray:
    """The composite with a predicted colour transform applied to the pixels of ``box`` and blended in by the
    soft mask, a tile of rows at a time on the coefficients' device (memory stays bounded at any size).

    Args:
        coefficients: (1, 42, G, G) tensor from ``ColourNet.predict_coefficients``; the grid spans ``content_box``.
        box: the foreground's box (x0, y0, x1, y1); content_box: the box the network saw.
        tile_pixels: about how many pixels one tile holds.
    """
    import torch

    from ssh_model.colour_net import apply_transform

    x0, y0, x1, y1 = box
    cx0, cy0, cx1, cy1 = content_box
    span_x, span_y = cx1 - cx0, cy1 - cy0
    rows = max(1, tile_pixels // max(1, x1 - x0))
    out = composite.copy()
    coefficients = coefficients.float()
    for top in range(y0, y1, rows):
        bottom = min(y1, top + rows)
        region = torch.from_numpy(np.ascontiguousarray(composite[top:bottom, x0:x1])).to(coefficients.device)
        image = region.permute(2, 0, 1)[None].float().div_(255.0)  # (1, 3, h, w) in [0, 1]
        where = ((x0 - cx0) / span_x, (top - cy0) / span_y, (x1 - cx0) / span_x, (bottom - cy0) / span_y)
        graded = apply_transform(image, coefficients, where)  # (1, 3, h, w)
        alpha = torch.from_numpy(np.ascontiguousarray(weights[top:bottom, x0:x1])).to(coefficients.device)
        mixed = torch.lerp(image[0], graded[0], alpha)  # (3, h, w); exactly the input where alpha is 0
        out[top:bottom, x0:x1] = mixed.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).cpu()
    return out


def predict_coefficients(model, content: np.ndarray, reference: np.ndarray):
    """A transform-predicting model's coefficients (1, 42, G, G) for ``content`` in the look of ``reference``."""
    import torch

    from ssh_model.network import images_to_tensor

    device, dtype = _model_device_dtype(model)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return model.predict_coefficients(images_to_tensor(content).to(device=device, dtype=dtype),
                                              images_to_tensor(reference).to(device=device, dtype=dtype))
    finally:
        model.train(was_training)


def harmonize_details(composite: np.ndarray, mask: np.ndarray, model, background: np.ndarray | None = None,
                      size: int = NET_SIZE, lut_size: int = LUT_SIZE, lut_backend: str = "auto") -> Harmonized:
    """``harmonize`` and its intermediate results (see the module doc).

    ``lut_backend``: "pillow" (threaded ``apply_lut`` + uint16 blend, the CPU path), "torch" (on the
    model's device, ``recolour_on_device``) or "auto" (torch when the model is on a GPU, else pillow).
    """
    from ssh_model.lut import LUT, apply_lut

    if lut_backend not in ("auto", "pillow", "torch"):
        raise ValueError(f"lut_backend must be 'auto', 'pillow' or 'torch', got {lut_backend!r}")

    weights = check_composite(composite, mask, background, allow_full=background is not None)  # (H, W)
    height, width = weights.shape
    fg_box = foreground_box(weights)
    content_box = with_margin(fg_box, width, height)
    picture, mask_picture = Image.fromarray(composite), Image.fromarray(weights)  # RGB, F
    content_shape = net_shape(content_box[2] - content_box[0], content_box[3] - content_box[1], size)
    content = _resize(picture, content_shape, content_box)  # (h, w, 3) uint8
    content_mask = _resize(mask_picture, content_shape, content_box)  # (h, w) float32
    if background is not None:
        bg_height, bg_width = background.shape[:2]
        reference = _resize(Image.fromarray(background), net_shape(bg_width, bg_height, size))
    else:
        reference = background_reference(composite, weights, size, picture, mask_picture)
    if getattr(model, "predicts_transform", False):
        # The encoder sees the foreground's colours only, as the reference holds the background's only:
        # the box's margin of background pixels is refilled from the foreground around it.
        core = content_mask >= CORE_MASK
        seen = push_pull_fill(content, core) if core.any() and not core.all() else content
        coefficients = predict_coefficients(model, seen, reference)  # (1, 42, G, G)
        image = recolour_with_transform(composite, weights, coefficients, fg_box, content_box)
        output = recolour_with_transform(content, np.ones(content.shape[:2], np.float32), coefficients,
                                         (0, 0, content.shape[1], content.shape[0]),
                                         (0, 0, content.shape[1], content.shape[0]))
        return Harmonized(image=image, transform=coefficients[0].float().cpu().numpy(), content=content,
                          content_mask=content_mask, reference=reference,
                          network_output=output.astype(np.float32) / 255.0, content_box=content_box,
                          foreground_box=fg_box)
    output = run_network(model, content, reference)  # (h, w, 3) float32 in [0, 1]
    transform = fit_foreground_transform(content, output, content_mask)
    lut = LUT(table=transform.lut_table(lut_size), title="SSH harmonization", name="harmonize")
    device, _ = _model_device_dtype(model)
    if lut_backend == "torch" or (lut_backend == "auto" and device.type != "cpu"):
        image = recolour_on_device(composite, weights, lut, fg_box, device)
    else:
        x0, y0, x1, y1 = fg_box
        recoloured = apply_lut(np.ascontiguousarray(composite[y0:y1, x0:x1]), lut)  # (h, w, 3) uint8
        image = blend_region(composite, recoloured, weights, fg_box)
    return Harmonized(image=image, transform=transform, content=content, content_mask=content_mask,
                      reference=reference, network_output=output, content_box=content_box,
                      foreground_box=fg_box)


def harmonize(composite: np.ndarray, mask: np.ndarray, model, background: np.ndarray | None = None,
              size: int = NET_SIZE) -> np.ndarray:
    """Re-colour the foreground of ``composite`` to match its background, at full resolution.

    Args:
        composite: uint8 (H, W, 3), any size and aspect.
        mask: the foreground, (H, W) bool / uint8 0-255 / float 0-1; soft edges are blended.
        model: a torch module with ``forward(content, reference)`` on (B, 3, H, W) in [-1, 1]
            (an ``SSHNet`` or a ``ColourNet``); it runs in eval mode on its own device.
        background: an optional separate background photo (uint8 (H', W', 3), any size) to match
            instead of the composite's own background.
        size: the long side of the network's inputs.

    Returns:
        uint8 (H, W, 3); pixels where the mask is 0 are exactly the composite's.
    """
    return harmonize_details(composite, mask, model, background, size).image


def harmonize_files(composite_url: str, mask_url: str, model, background_url: str | None = None,
                    size: int = NET_SIZE) -> np.ndarray:
    """``harmonize`` on images at fsspec URLs (EXIF, RGBA, grey and 16-bit handled by ``read_image``/
    ``read_mask``); returns uint8 (H, W, 3)."""
    composite = read_image(composite_url)
    mask = read_mask(mask_url)
    if mask.shape != composite.shape[:2]:
        raise ValueError(f"mask {mask_url} is {mask.shape[1]}x{mask.shape[0]} but composite {composite_url} "
                         f"is {composite.shape[1]}x{composite.shape[0]}")
    background = read_image(background_url) if background_url else None
    return harmonize(composite, mask, model, background=background, size=size)


__all__ = [
    "Harmonized", "background_reference", "blend_region", "fit_foreground_transform", "foreground_box",
    "harmonize", "harmonize_details", "harmonize_files", "net_shape", "predict_coefficients", "push_pull_fill",
    "recolour_on_device", "recolour_with_transform", "run_network", "with_margin",
]
