"""Metrics on 0-255 images: the field's conventions, checked against hand values and scikit-image."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from ssh_model.metrics import PSNR_CAP, evaluate, fmse, mse, psnr, ssim


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(3)


def noisy_pair(rng: np.random.Generator, shape=(48, 64, 3), spread=20) -> tuple[np.ndarray, np.ndarray]:
    a = rng.integers(0, 256, shape, dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-spread, spread + 1, shape), 0, 255).astype(np.uint8)
    return a, b


def test_mse_and_psnr_by_hand():
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 48  # one value off by 48: MSE = 48^2 / 48 values = 48
    assert mse(a, b) == pytest.approx(48.0)
    assert psnr(a, b) == pytest.approx(10 * np.log10(255**2 / 48.0))
    assert mse(a.astype(np.float32), b.astype(np.float64)) == pytest.approx(48.0)


def test_psnr_matches_skimage_and_caps_identical(rng):
    a, b = noisy_pair(rng)
    assert psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255), rel=1e-9)
    assert psnr(a, a) == PSNR_CAP


def test_fmse_counts_only_the_foreground(rng):
    # Given errors only outside the mask, then fMSE is 0 while MSE is not
    a = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    b = a.copy()
    mask = np.zeros((20, 30), bool)
    mask[5:10, 5:15] = True
    b[~mask] = 255 - b[~mask]
    assert fmse(a, b, mask) == 0.0 and mse(a, b) > 100
    # Given a uniform error of 10 on the foreground, then fMSE is 100 whatever the mask type
    c = a.astype(np.float64)
    c[mask] += 10
    for as_type in (mask, mask.astype(np.uint8) * 255, mask.astype(np.float32)):
        assert fmse(a, c, as_type) == pytest.approx(100.0)
    # iHarmony4's formula for binary masks: mse(a*m, b*m) * H * W / area
    m3 = mask[..., None]
    reference = mse(a * m3, c * m3) * mask.size / mask.sum()
    assert fmse(a, c, mask) == pytest.approx(reference)


def test_fmse_soft_mask_weights_pixels(rng):
    a = np.zeros((2, 2, 3))
    b = np.array([[[10.0] * 3, [20.0] * 3], [[0.0] * 3, [0.0] * 3]])
    soft = np.array([[1.0, 0.5], [0.0, 0.0]])
    assert fmse(a, b, soft) == pytest.approx((1.0 * 100 + 0.5 * 400) / 1.5)


def test_metric_errors(rng):
    a, b = noisy_pair(rng)
    with pytest.raises(ValueError, match="no pixel"):
        fmse(a, b, np.zeros(a.shape[:2], bool))
    with pytest.raises(ValueError, match="shape"):
        mse(a, b[:-1])
    with pytest.raises(ValueError):
        fmse(a, b, np.ones((3, 3), bool))
    with pytest.raises(ValueError, match="11 x 11"):
        ssim(a[:8, :8], b[:8, :8])


@pytest.mark.parametrize("spread", [3, 40, 120])
def test_ssim_matches_skimage(rng, spread):
    a, b = noisy_pair(rng, (40, 52, 3), spread)
    expected = structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=2
    )
    assert ssim(a, b) == pytest.approx(expected, abs=1e-5)


def test_ssim_flat_images_and_identity(rng):
    a = np.full((32, 32, 3), 200, np.uint8)
    b = a.copy()
    b[16:] = 201
    expected = structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=2
    )
    assert ssim(a, b) == pytest.approx(expected, abs=1e-6)
    c, _ = noisy_pair(rng)
    assert ssim(c, c) == pytest.approx(1.0)
    assert ssim(c, 255 - c) < 0.0


def test_evaluate_reports_full_and_256(rng):
    # Given a prediction off by a constant 5 on the foreground of a non-square image
    target = rng.integers(20, 230, (150, 310, 3), dtype=np.uint8)
    mask = np.zeros((150, 310), np.float32)
    mask[40:110, 100:220] = 1.0
    pred = target.copy()
    pred[mask > 0] += 5
    scores = evaluate(pred, target, mask)
    assert set(scores) == {f"{k}{s}" for k in ("mse", "psnr", "fmse", "ssim") for s in ("", "_256")}
    assert all(isinstance(v, float) for v in scores.values())
    assert scores["fmse"] == pytest.approx(25.0)
    assert scores["mse"] == pytest.approx(25.0 * mask.mean())
    assert scores["psnr"] == pytest.approx(psnr(pred, target))
    # at 256 x 256 the error is still ~25 on the foreground (edges blur a little)
    assert 15.0 < scores["fmse_256"] < 30.0 and scores["mse_256"] == pytest.approx(scores["mse"], rel=0.2)
    assert 0.0 < scores["ssim_256"] < 1.0 and 0.0 < scores["ssim"] < 1.0
    perfect = evaluate(target, target, mask)
    assert perfect["psnr_256"] == PSNR_CAP and perfect["fmse_256"] == 0.0
    assert perfect["ssim"] == pytest.approx(1.0)
