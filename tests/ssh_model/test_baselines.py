"""Classical baselines: they undo a colour cast on the foreground and never touch the background."""

from __future__ import annotations

import numpy as np
import pytest

from ssh_model.baselines import BASELINES, identity, match_histograms, reinhard
from ssh_model.metrics import fmse


@pytest.fixture
def scene() -> dict[str, np.ndarray]:
    """A textured neutral photo (the truth), a soft disc mask, and the photo with a warm cast on the disc."""
    rng = np.random.default_rng(11)
    height, width = 72, 96
    yy, xx = np.mgrid[0:height, 0:width]
    base = 60 + 1.2 * xx + 0.6 * yy  # smooth shading
    texture = rng.normal(0, 12, (height, width))
    grey = np.clip(base + texture, 0, 255)
    truth = np.stack([grey, grey * 0.98 + 3, grey * 1.02 - 3], axis=2)
    truth = np.clip(truth + rng.normal(0, 4, truth.shape), 0, 255).astype(np.uint8)
    radius = np.hypot(yy - 36, xx - 40)
    mask = np.clip((22 - radius) / 3 + 0.5, 0, 1).astype(np.float32)  # soft edge ~3 px
    cast = truth.astype(np.float64) * np.array([1.35, 1.0, 0.6]) + np.array([10, 0, -5])
    alpha = mask[..., None]
    composite = np.rint(alpha * np.clip(cast, 0, 255) + (1 - alpha) * truth).astype(np.uint8)
    return {"truth": truth, "mask": mask, "composite": composite}


def test_registry_names():
    assert set(BASELINES) == {"identity", "reinhard", "histogram"}
    assert (BASELINES["identity"], BASELINES["reinhard"], BASELINES["histogram"]) == (identity, reinhard, match_histograms)


def test_identity_returns_the_input_as_a_copy(scene):
    out = identity(scene["composite"], scene["mask"])
    assert np.array_equal(out, scene["composite"]) and out is not scene["composite"]
    assert np.array_equal(identity(scene["composite"], scene["mask"], None), scene["composite"])


@pytest.mark.parametrize("name", ["reinhard", "histogram"])
def test_baseline_reduces_a_colour_cast(scene, name):
    # Given a strong warm cast on the foreground of a neutral scene
    before = fmse(scene["composite"], scene["truth"], scene["mask"])
    # When the baseline matches the foreground to the background
    out = BASELINES[name](scene["composite"], scene["mask"])
    # Then the foreground error drops a lot, and the foreground's mean colour is neutral again
    after = fmse(out, scene["truth"], scene["mask"])
    assert after < 0.3 * before, (before, after)
    inside = scene["mask"] > 0.99
    mean_rgb = out[inside].mean(axis=0)
    assert abs(mean_rgb[0] - mean_rgb[2]) < 15, mean_rgb


@pytest.mark.parametrize("name", ["reinhard", "histogram"])
def test_pixels_outside_the_mask_are_bit_identical(scene, name):
    out = BASELINES[name](scene["composite"], scene["mask"])
    outside = scene["mask"] == 0
    assert out.dtype == np.uint8 and out.shape == scene["composite"].shape
    assert np.array_equal(out[outside], scene["composite"][outside])
    assert not np.array_equal(out[~outside], scene["composite"][~outside])


@pytest.mark.parametrize("name", ["reinhard", "histogram"])
def test_mask_types_agree(scene, name):
    binary = scene["mask"] > 0.5
    fn = BASELINES[name]
    as_uint8 = binary.astype(np.uint8) * 255
    assert np.array_equal(fn(scene["composite"], binary), fn(scene["composite"], as_uint8))


@pytest.mark.parametrize("name", ["reinhard", "histogram"])
def test_separate_background_is_the_target(scene, name):
    # Given a separate, strongly blue background photo (of another size)
    rng = np.random.default_rng(5)
    blue = np.clip(rng.normal((40, 60, 200), 10, (50, 40, 3)), 0, 255).astype(np.uint8)
    out = BASELINES[name](scene["composite"], scene["mask"], blue)
    inside = scene["mask"] > 0.99
    # Then the foreground turns blue, and the rest is unchanged
    mean_rgb = out[inside].mean(axis=0)
    assert mean_rgb[2] > mean_rgb[0] + 60, mean_rgb
    assert np.array_equal(out[scene["mask"] == 0], scene["composite"][scene["mask"] == 0])
    # and with a background, a full mask is allowed
    full = np.ones(scene["mask"].shape, bool)
    assert BASELINES[name](scene["composite"], full, blue)[..., 2].mean() > 150


@pytest.mark.parametrize("name", list(BASELINES))
def test_input_errors(scene, name):
    fn = BASELINES[name]
    with pytest.raises(ValueError, match="empty"):
        fn(scene["composite"], np.zeros(scene["mask"].shape, bool))
    with pytest.raises(ValueError, match="x"):
        fn(scene["composite"], scene["mask"][:, :-1])
    with pytest.raises(ValueError, match="uint8"):
        fn(scene["composite"].astype(np.float32), scene["mask"])
    if name != "identity":
        with pytest.raises(ValueError, match="whole image"):
            fn(scene["composite"], np.ones(scene["mask"].shape, bool))


def test_histogram_matches_skimage_for_a_binary_mask(scene):
    from skimage.exposure import match_histograms as skimage_match

    binary = scene["mask"] > 0.5
    composite = scene["composite"]
    out = match_histograms(composite, binary)
    expected = skimage_match(composite[binary][:, None, :], composite[~binary][:, None, :], channel_axis=-1)
    # skimage truncates its float lookup to uint8 where we round: at most one level apart
    assert np.abs(out[binary].astype(float) - expected[:, 0, :]).max() <= 1.0
