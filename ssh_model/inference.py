"""Full-resolution harmonization: the network at low resolution, a global colour transform at full.

    out = harmonize(composite, mask)                   # any size, any aspect; the shipped model
    out = harmonize(rgba_composite)                    # the alpha is the mask
    out = harmonize(composite, mask, model, reference_mask=wall)   # match only the wall

Steps (see docs/method.md, "Full-resolution inference"):
1. Validate (``ssh_model.inputs``): composite uint8 (H, W, 3), or (H, W, 4) whose alpha is the
   mask; mask (H, W) bool / uint8 / uint16 / float 0-1 of the same size, neither empty nor
   covering everything (a full mask is accepted with a ``background``).
2. Network inputs at low resolution (``ssh_model.regions``; long side = ``size``, aspect kept; the
   network pads to x16):
   - ``content``: the foreground's bounding box, padded by ``CONTEXT_MARGIN`` of its long side,
     area-downscaled (BOX filter);
   - ``reference``: background pixels only. With a ``background`` photo: that photo, whole.
     Without: the whole composite, downscaled with the same filter as the mask, after which every
     low-resolution pixel whose footprint touches the foreground (mask > 0) is thrown away and
     refilled by push-pull interpolation from the clean pixels around it. The foreground's colours
     therefore cannot reach the reference, while the reference stays a natural-looking picture of
     the background (no hard grey hole for the style encoder to see). With a ``reference_mask``:
     only the region it selects (of the background photo, or of the composite less the
     foreground), its bounding box downscaled and the rest refilled from it the same way.
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
import torch
from PIL import Image

from ssh_model.colour import ColourTransform, fit_colour_transform
from ssh_model.colour_net import apply_transform
from ssh_model.images import read_image, read_image_with_mask, read_mask
from ssh_model.inputs import MASK_EPSILON, check_composite, check_reference, composite_and_mask
from ssh_model.lut import LUT, apply_lut, apply_lut_torch, luts_to_tensor
from ssh_model.network import images_to_tensor
from ssh_model.regions import (
    CORE_MASK,
    NET_SIZE,
    Box,
    background_reference,
    foreground_box,
    net_shape,
    push_pull_fill,
    region_reference,
    resize_area,
    with_margin,
)

logger = logging.getLogger(__name__)

LUT_SIZE = 33


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


def _model_device_dtype(model):
    parameter = next(iter(model.parameters()), None)
    if parameter is None:
        return torch.device("cpu"), torch.float32
    return parameter.device, parameter.dtype if parameter.dtype.is_floating_point else torch.float32


def run_network(model, content: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The model's re-rendering of ``content`` (h, w, 3) uint8 in the look of ``reference``, as float32 in
    [0, 1] (h, w, 3). Runs in eval mode under ``torch.inference_mode`` on the model's device; the model's
    training flag is restored afterwards."""
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
        raise ValueError(f"the model returned shape {tuple(output.shape)} for content {tuple(content_t.shape)}")
    output = ((output[0].float() + 1.0) * 0.5).clamp_(0.0, 1.0)  # (3, h, w)
    return output.permute(1, 2, 0).cpu().numpy().astype(np.float32)


def fit_foreground_transform(content: np.ndarray, output: np.ndarray, content_mask: np.ndarray) -> ColourTransform:
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
    x0, y0, x1, y1 = box
    region = torch.from_numpy(np.ascontiguousarray(composite[y0:y1, x0:x1])).to(device)  # (h, w, 3) uint8
    image = region.permute(2, 0, 1)[None].float().div_(255.0)  # (1, 3, h, w) in [0, 1]
    graded = apply_lut_torch(image, luts_to_tensor([lut]).to(device))  # (1, 3, h, w)
    alpha = torch.from_numpy(np.ascontiguousarray(weights[y0:y1, x0:x1])).to(device)  # (h, w)
    mixed = torch.lerp(image[0], graded[0], alpha)  # (3, h, w)
    out = composite.copy()
    out[y0:y1, x0:x1] = mixed.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return out


def recolour_with_transform(
    composite: np.ndarray, weights: np.ndarray, coefficients, box: Box, content_box: Box, tile_pixels: int = 1 << 20
) -> np.ndarray:
    """The composite with a predicted colour transform applied to the pixels of ``box`` and blended in by the
    soft mask, a tile of rows at a time on the coefficients' device (memory stays bounded at any size).

    Args:
        coefficients: (1, 42, G, G) tensor from ``ColourNet.predict_coefficients``; the grid spans ``content_box``.
        box: the foreground's box (x0, y0, x1, y1); content_box: the box the network saw.
        tile_pixels: about how many pixels one tile holds.
    """
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
    device, dtype = _model_device_dtype(model)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return model.predict_coefficients(
                images_to_tensor(content).to(device=device, dtype=dtype),
                images_to_tensor(reference).to(device=device, dtype=dtype),
            )
    finally:
        model.train(was_training)


def _reference(
    composite: np.ndarray,
    weights: np.ndarray,
    background: np.ndarray | None,
    reference_mask: np.ndarray | None,
    size: int,
    name: str,
    pictures: tuple,
) -> np.ndarray:
    """The network's reference (h', w', 3): the background photo, or the composite's background, either
    one limited to ``reference_mask`` when it is given (of the background photo's size when there is
    one, else of the composite's)."""
    if reference_mask is not None:
        image = composite if background is None else background
        region = check_reference(
            reference_mask, image.shape[:2], name, "the composite" if background is None else "the background"
        )
        return region_reference(image, region, size, foreground=weights if background is None else None)
    if background is not None:
        bg_height, bg_width = background.shape[:2]
        return resize_area(Image.fromarray(background), net_shape(bg_width, bg_height, size))
    return background_reference(composite, weights, size, *pictures)


def harmonize_details(
    composite: np.ndarray,
    mask: np.ndarray | None = None,
    model=None,
    background: np.ndarray | None = None,
    size: int = NET_SIZE,
    lut_size: int = LUT_SIZE,
    lut_backend: str = "auto",
    reference_mask: np.ndarray | None = None,
    names: tuple[str, str, str] = ("composite", "mask", "reference mask"),
) -> Harmonized:
    """``harmonize`` and its intermediate results (see the module doc).

    ``lut_backend``: "pillow" (threaded ``apply_lut`` + uint16 blend, the CPU path), "torch" (on the
    model's device, ``recolour_on_device``) or "auto" (torch when the model is on a GPU, else pillow).
    ``names``: how error messages name the composite, the mask and the reference mask (e.g. their URLs).
    """
    if lut_backend not in ("auto", "pillow", "torch"):
        raise ValueError(f"lut_backend must be 'auto', 'pillow' or 'torch', got {lut_backend!r}")
    if model is None:
        from ssh_model.pretrained import shipped_model  # torch: only when the default model is wanted

        model = shipped_model()
    composite, mask = composite_and_mask(composite, mask, *names[:2])  # (H, W, 3), mask or alpha
    weights = check_composite(composite, mask, background, allow_full=background is not None, names=names[:2])  # (H, W)
    height, width = weights.shape
    fg_box = foreground_box(weights)
    content_box = with_margin(fg_box, width, height)
    picture, mask_picture = Image.fromarray(composite), Image.fromarray(weights)  # RGB, F
    content_shape = net_shape(content_box[2] - content_box[0], content_box[3] - content_box[1], size)
    content = resize_area(picture, content_shape, content_box)  # (h, w, 3) uint8
    content_mask = resize_area(mask_picture, content_shape, content_box)  # (h, w) float32
    reference = _reference(composite, weights, background, reference_mask, size, names[2], (picture, mask_picture))
    if getattr(model, "predicts_transform", False):
        # The encoder sees the foreground's colours only, as the reference holds the background's only:
        # the box's margin of background pixels is refilled from the foreground around it.
        core = content_mask >= CORE_MASK
        seen = push_pull_fill(content, core) if core.any() and not core.all() else content
        coefficients = predict_coefficients(model, seen, reference)  # (1, 42, G, G)
        image = recolour_with_transform(composite, weights, coefficients, fg_box, content_box)
        output = recolour_with_transform(
            content,
            np.ones(content.shape[:2], np.float32),
            coefficients,
            (0, 0, content.shape[1], content.shape[0]),
            (0, 0, content.shape[1], content.shape[0]),
        )
        return Harmonized(
            image=image,
            transform=coefficients[0].float().cpu().numpy(),
            content=content,
            content_mask=content_mask,
            reference=reference,
            network_output=output.astype(np.float32) / 255.0,
            content_box=content_box,
            foreground_box=fg_box,
        )
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
    return Harmonized(
        image=image,
        transform=transform,
        content=content,
        content_mask=content_mask,
        reference=reference,
        network_output=output,
        content_box=content_box,
        foreground_box=fg_box,
    )


def harmonize(
    composite: np.ndarray,
    mask: np.ndarray | None = None,
    model=None,
    background: np.ndarray | None = None,
    size: int = NET_SIZE,
    reference_mask: np.ndarray | None = None,
) -> np.ndarray:
    """Re-colour the foreground of ``composite`` to match its background, at full resolution.

    Args:
        composite: uint8 (H, W, 3), any size and aspect; or (H, W, 4) whose alpha is the mask when
            ``mask`` is None (a cut-out pasted over its background).
        mask: the foreground, (H, W) bool / uint8 0-255 / uint16 / float 0-1. Soft masks are blend
            weights: a pixel of mask a becomes a * harmonized + (1 - a) * composite, so feathered
            edges stay feathered and no hard edge appears.
        model: a torch module with ``forward(content, reference)`` on (B, 3, H, W) in [-1, 1]
            (an ``SSHNet`` or a ``ColourNet``), run in eval mode on its own device; None: the
            weights shipped with the package (``ssh_model.load_pretrained``).
        background: an optional separate background photo (uint8 (H', W', 3), any size) to match
            instead of the composite's own background.
        size: the long side of the network's inputs.
        reference_mask: match only this part of the background (e.g. the wall the object stands
            against, not the sky): (H, W) like ``mask``, of the background photo's size when one is
            given, else of the composite's (foreground pixels never count).

    Returns:
        uint8 (H, W, 3); pixels where the mask is 0 are exactly the composite's.

    Raises:
        ssh_model.errors.HarmonizeInputError: bad input, with a ``reason`` (see ``ssh_model.inputs``).
    """
    return harmonize_details(composite, mask, model, background, size, reference_mask=reference_mask).image


def harmonize_files(
    composite_url: str,
    mask_url: str | None = None,
    model=None,
    background_url: str | None = None,
    size: int = NET_SIZE,
    reference_mask_url: str | None = None,
) -> np.ndarray:
    """``harmonize`` on images at fsspec URLs (EXIF, grey and 16-bit handled by ``ssh_model.images``);
    without ``mask_url`` the composite's alpha is the mask. Returns uint8 (H, W, 3)."""
    composite, mask, mask_name = read_image_with_mask(composite_url, mask_url)
    background = read_image(background_url) if background_url else None
    reference_mask = read_mask(reference_mask_url) if reference_mask_url else None
    return harmonize_details(
        composite,
        mask,
        model,
        background,
        size,
        reference_mask=reference_mask,
        names=(f"composite {composite_url}", mask_name, f"reference mask {reference_mask_url}"),
    ).image


__all__ = [
    "NET_SIZE",
    "Harmonized",
    "blend_region",
    "fit_foreground_transform",
    "harmonize",
    "harmonize_details",
    "harmonize_files",
    "predict_coefficients",
    "recolour_on_device",
    "recolour_with_transform",
    "run_network",
]
