"""Image harmonization metrics on 0-255 images (uint8 or float arrays (H, W, 3)).

Conventions (the field's, from the iHarmony4 evaluation, unless said otherwise):
- ``mse``: mean over pixels and channels of the squared 0-255 difference.
- ``fmse``: the same over the foreground only: sum(m * err^2) / (3 * sum(m)), which for a binary
  mask is iHarmony4's ``mse(a * m, b * m) * H * W / foreground_area``; a soft mask weights pixels.
- ``psnr``: 10 log10(255^2 / mse), capped at ``PSNR_CAP`` dB so that identical images give a
  finite number (the cap keeps dataset means and JSON/MLflow logging sane).
- ``ssim``: Wang et al. 2004 with an 11-tap Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03,
  L = 255, population covariances, averaged over channels and over the image minus a 5 px border;
  the same numbers as ``skimage.metrics.structural_similarity(..., gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=2)``.
- ``evaluate`` adds ``*_256`` variants computed after resizing prediction, target and mask to
  256 x 256 (bicubic for images, bilinear for the mask), as the authors' notebook reports PSNR.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from ssh_model.inputs import as_mask

PSNR_CAP = 100.0
EVAL_SIZE = 256
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # 11-tap window, as skimage and the paper
SSIM_K1, SSIM_K2 = 0.01, 0.03
DATA_RANGE = 255.0


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if a.ndim not in (2, 3):
        raise ValueError(f"expected (H, W) or (H, W, C) images, got shape {a.shape}")
    return a, b


def _weights(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A mask (bool, uint8 0-255 or float 0-1) as float64 (H, W) weights matching ``shape``."""
    return as_mask(mask, shape=tuple(shape[:2])).astype(np.float64)


def _squared_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel squared error summed over channels: float64 (H, W)."""
    diff = a.astype(np.float64) - b.astype(np.float64)
    diff *= diff
    return diff.sum(axis=2) if diff.ndim == 3 else diff


def mse(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean squared error on the 0-255 scale; with ``mask``, over the masked pixels (soft-weighted)."""
    a, b = _pair(a, b)
    channels = a.shape[2] if a.ndim == 3 else 1
    error = _squared_error(a, b)  # (H, W)
    if mask is None:
        return float(error.sum() / (error.size * channels))
    weights = _weights(mask, a.shape)
    total = weights.sum()
    if total <= 0:
        raise ValueError("the mask selects no pixel")
    return float((weights * error).sum() / (total * channels))


def fmse(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Foreground MSE: the MSE over the pixels of ``mask`` (ValueError when it is empty)."""
    return mse(a, b, mask)


def psnr_from_mse(value: float) -> float:
    if value <= DATA_RANGE**2 * 10 ** (-PSNR_CAP / 10):
        return PSNR_CAP
    return float(10.0 * np.log10(DATA_RANGE**2 / value))


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio in dB (peak 255), capped at ``PSNR_CAP`` for identical images."""
    return psnr_from_mse(mse(a, b, mask))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity of two 0-255 images, averaged over channels (see the module doc)."""
    a, b = _pair(a, b)
    if min(a.shape[:2]) < 11:
        raise ValueError(f"SSIM needs images of at least 11 x 11 pixels, got {a.shape[1]}x{a.shape[0]}")
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    # Centre on the mean first: float32 then keeps the variance terms accurate.
    offset = 0.5 * (float(a.mean()) + float(b.mean()))
    planes = [(a[..., c].astype(np.float32) - offset, b[..., c].astype(np.float32) - offset) for c in range(a.shape[2])]
    return float(np.mean([_ssim_plane(x, y, offset) for x, y in planes]))


def _ssim_plane(x: np.ndarray, y: np.ndarray, offset: float) -> float:
    """Mean SSIM of float32 (H, W) planes x + offset and y + offset (given centred), 5 px border excluded.

    The (co)variances are computed on the centred values (accurate in float32); the means shift back.
    """

    def blur(v: np.ndarray) -> np.ndarray:
        return gaussian_filter(v, sigma=SSIM_SIGMA, truncate=SSIM_TRUNCATE, mode="reflect")

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x * mu_x
    var_y = blur(y * y) - mu_y * mu_y
    cov = blur(x * y) - mu_x * mu_y
    mu_x += offset
    mu_y += offset
    c1, c2 = (SSIM_K1 * DATA_RANGE) ** 2, (SSIM_K2 * DATA_RANGE) ** 2
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    ssim_map = numerator / ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
    pad = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)  # 5: half the window
    return float(ssim_map[pad:-pad, pad:-pad].astype(np.float64).mean())


def _resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 or float 0-255 (H, W, 3) -> uint8 (size, size, 3), bicubic."""
    pixels = np.clip(np.rint(image), 0, 255).astype(np.uint8) if image.dtype != np.uint8 else image
    resized = Image.fromarray(np.ascontiguousarray(pixels)).resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(resized)


def _resize_mask(weights: np.ndarray, size: int) -> np.ndarray:
    """float (H, W) in [0, 1] -> float32 (size, size), bilinear."""
    plane = Image.fromarray(np.ascontiguousarray(weights, dtype=np.float32))  # mode "F"
    resized = plane.resize((size, size), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def evaluate(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """All metrics at full resolution and at 256 x 256 (``*_256``).

    Args:
        pred: the harmonized image, (H, W, 3) 0-255.
        target: the ground truth, same shape.
        mask: the foreground, (H, W) bool / uint8 0-255 / float 0-1; must select some pixel.
    """
    pred, target = _pair(pred, target)
    weights = _weights(mask, pred.shape)
    full_mse = mse(pred, target)
    scores = {
        "mse": full_mse,
        "psnr": psnr_from_mse(full_mse),
        "fmse": fmse(pred, target, weights),
        "ssim": ssim(pred, target),
    }
    small_pred, small_target = _resize_image(pred, EVAL_SIZE), _resize_image(target, EVAL_SIZE)
    small_mask = _resize_mask(weights, EVAL_SIZE)
    small_mse = mse(small_pred, small_target)
    scores.update(
        {
            "mse_256": small_mse,
            "psnr_256": psnr_from_mse(small_mse),
            "fmse_256": fmse(small_pred, small_target, small_mask),
            "ssim_256": ssim(small_pred, small_target),
        }
    )
    return scores


__all__ = ["EVAL_SIZE", "PSNR_CAP", "evaluate", "fmse", "mse", "psnr", "psnr_from_mse", "ssim"]
