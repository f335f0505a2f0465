"""Classical harmonization baselines: what a model has to beat.

All share the signature ``(composite, mask, background=None) -> uint8 (H, W, 3)``:
- composite: uint8 (H, W, 3); mask: (H, W) bool / uint8 0-255 / float 0-1 (1 = foreground).
- background: an optional separate background photo (any size). When given, its pixels are the
  appearance to match; otherwise the composite's pixels outside the mask (mask value 0) are.
- Only the foreground changes: the re-coloured pixels are blended over the composite with the soft
  mask, so pixels where the mask is 0 come back bit-identical.

Statistics are taken from at most ``MAX_STAT_PIXELS`` evenly strided pixels per side, which keeps
4K images fast and is deterministic.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
from skimage.color import lab2rgb, rgb2lab

from ssh_model.inputs import MASK_EPSILON, check_composite

MAX_STAT_PIXELS = 1 << 20
MIN_STD = 1e-3  # Lab units: a flat foreground keeps its (shifted) flat colour

Baseline = Callable[..., np.ndarray]


def _strided(pixels: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """At most ``MAX_STAT_PIXELS`` of (N, 3) pixels (and their weights), evenly strided."""
    step = max(1, -(-len(pixels) // MAX_STAT_PIXELS))
    return pixels[::step], None if weights is None else weights[::step]


def _background_pixels(composite: np.ndarray, weights: np.ndarray, background: np.ndarray | None) -> np.ndarray:
    """uint8 (N, 3): the appearance to match (the background photo, or the composite where mask is 0)."""
    if background is not None:
        return _strided(background.reshape(-1, 3))[0]
    outside = weights < MASK_EPSILON
    if not outside.any():
        raise ValueError(
            "the mask covers the whole image: no background pixel is left to match (pass a separate background image)"
        )
    return _strided(composite[outside])[0]


def _blend(composite: np.ndarray, weights: np.ndarray, region: np.ndarray, recoloured: np.ndarray) -> np.ndarray:
    """``recoloured`` float (N, 3) 0-255 pixels of ``region`` (H, W bool), soft-blended over the composite."""
    out = composite.copy()
    alpha = weights[region][:, None].astype(np.float64)  # (N, 1)
    original = composite[region].astype(np.float64)
    out[region] = np.clip(np.rint(original + alpha * (recoloured - original)), 0, 255).astype(np.uint8)
    return out


def identity(composite: np.ndarray, mask: np.ndarray, background: np.ndarray | None = None) -> np.ndarray:
    """The composite unchanged (a copy): the baseline every method must beat on mild cases."""
    check_composite(composite, mask, background, allow_full=True)
    return np.array(composite, dtype=np.uint8, copy=True)


def _weighted_mean_std(values: np.ndarray, weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of (N, 3) values, optionally weighted by (N,)."""
    mean = np.average(values, axis=0, weights=weights)
    variance = np.average((values - mean) ** 2, axis=0, weights=weights)
    return mean, np.sqrt(variance)


def reinhard(composite: np.ndarray, mask: np.ndarray, background: np.ndarray | None = None) -> np.ndarray:
    """Reinhard et al. 2001 colour transfer in CIE Lab: the foreground's per-channel mean and standard
    deviation are matched to the background's (foreground statistics weighted by the soft mask)."""
    weights = check_composite(composite, mask, background, allow_full=background is not None)
    target = _background_pixels(composite, weights, background)  # (M, 3) uint8
    region = weights >= MASK_EPSILON  # (H, W)
    fg_pixels = composite[region]  # (N, 3) uint8
    fg_lab = rgb2lab(fg_pixels[:, None, :].astype(np.float64) / 255.0)[:, 0, :]  # (N, 3)
    sample, sample_weights = _strided(fg_lab, weights[region])
    fg_mean, fg_std = _weighted_mean_std(sample, sample_weights)
    bg_lab = rgb2lab(target[:, None, :].astype(np.float64) / 255.0)[:, 0, :]
    bg_mean, bg_std = _weighted_mean_std(bg_lab, None)
    scale = bg_std / np.maximum(fg_std, MIN_STD)
    moved = (fg_lab - fg_mean) * scale + bg_mean  # (N, 3) Lab
    moved[:, 0] = np.clip(moved[:, 0], 0.0, 100.0)
    with warnings.catch_warnings():  # out-of-gamut colours are clipped, as intended: no warning per image
        warnings.simplefilter("ignore", UserWarning)
        recoloured = np.clip(lab2rgb(moved[:, None, :])[:, 0, :], 0.0, 1.0) * 255.0
    return _blend(composite, weights, region, recoloured)


def _cdf_lookup(source: np.ndarray, source_weights: np.ndarray, target: np.ndarray) -> np.ndarray:
    """float64 (256,): where each uint8 level of ``source`` goes so that its (weighted) CDF matches
    ``target``'s. The rule of ``skimage.exposure.match_histograms`` (target levels interpolated at the
    source quantiles), with pixels weighted by the soft mask; levels absent from the source
    interpolate between their neighbours."""
    src_counts = np.bincount(source, weights=source_weights, minlength=256)
    tgt_counts = np.bincount(target, minlength=256).astype(np.float64)
    src_levels, tgt_levels = np.nonzero(src_counts)[0], np.nonzero(tgt_counts)[0]
    src_quantiles = np.cumsum(src_counts[src_levels]) / src_counts.sum()
    tgt_quantiles = np.cumsum(tgt_counts[tgt_levels]) / tgt_counts.sum()
    mapped = np.interp(src_quantiles, tgt_quantiles, tgt_levels.astype(np.float64))
    return np.interp(np.arange(256), src_levels, mapped)


def match_histograms(composite: np.ndarray, mask: np.ndarray, background: np.ndarray | None = None) -> np.ndarray:
    """Per-channel histogram matching of the foreground to the background, soft-blended.

    The mapping is ``skimage.exposure.match_histograms``'s (identical for a binary mask), except
    that each foreground pixel counts with its mask weight, so half-transparent edge pixels (a mix
    of foreground and background colours) do not skew the foreground's histogram.
    """
    weights = check_composite(composite, mask, background, allow_full=background is not None)
    target = _background_pixels(composite, weights, background)  # (M, 3) uint8
    region = weights >= MASK_EPSILON  # (H, W)
    fg_pixels, fg_weights = composite[region], weights[region].astype(np.float64)  # (N, 3), (N,)
    tables = [_cdf_lookup(fg_pixels[:, c], fg_weights, target[:, c]) for c in range(3)]
    recoloured = np.stack([tables[c][fg_pixels[:, c]] for c in range(3)], axis=1)  # (N, 3) float 0-255
    return _blend(composite, weights, region, recoloured)


BASELINES: dict[str, Baseline] = {"identity": identity, "reinhard": reinhard, "histogram": match_histograms}

__all__ = ["BASELINES", "identity", "match_histograms", "reinhard"]
