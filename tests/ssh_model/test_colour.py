"""The 17-term polynomial colour transform: recovers known transforms, stays sane when unconstrained."""

from __future__ import annotations

import numpy as np
import pytest

from ssh_model.colour import (
    IDENTITY_COEFFICIENTS,
    TERMS,
    ColourTransform,
    fit_colour_transform,
    linear_to_srgb,
    polynomial_features,
    srgb_to_linear,
)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(21)


def graded(srgb: np.ndarray) -> np.ndarray:
    """A realistic grade outside the polynomial family: gains, a lift and a gamma in linear light."""
    linear = srgb_to_linear(srgb)
    out = np.clip(linear * np.array([1.15, 0.95, 0.7]) + 0.01, 0, 1) ** np.array([0.9, 1.0, 1.1])
    return linear_to_srgb(out)


def test_srgb_transfer_roundtrip_and_anchors():
    values = np.linspace(0, 1, 101)
    assert np.allclose(linear_to_srgb(srgb_to_linear(values)), values, atol=1e-12)
    assert srgb_to_linear(np.array([0.0, 1.0])).tolist() == [0.0, 1.0]
    assert srgb_to_linear(np.array([0.5]))[0] == pytest.approx(0.21404, abs=1e-5)


def test_seventeen_terms():
    assert len(TERMS) == 17
    rgb = np.array([[0.2, 0.3, 0.5]])
    features = polynomial_features(rgb)[0]
    r, g, b = 0.2, 0.3, 0.5
    expected = [
        r,
        g,
        b,
        r * g,
        r * b,
        g * b,
        r * r,
        g * g,
        b * b,
        r * g * b,
        r * r * g,
        g * g * b,
        b * b * r,
        r**3,
        g**3,
        b**3,
        1.0,
    ]
    assert np.allclose(features, expected)


def test_fit_recovers_a_transform_in_the_family(rng):
    # Given samples mapped by an exact polynomial in linear light (a channel mix plus a curve)
    truth = IDENTITY_COEFFICIENTS.copy()
    truth[:3] = [[0.8, 0.05, 0.0], [0.1, 0.8, 0.05], [0.0, 0.1, 0.7]]  # no output reaches 1: no clipping
    truth[TERMS.index("r2")] = [0.1, 0.0, 0.0]
    truth[TERMS.index("1")] = [0.0, 0.02, 0.05]
    source = rng.uniform(0, 1, (4000, 3))
    target = linear_to_srgb(np.clip(polynomial_features(srgb_to_linear(source)) @ truth, 0, 1))
    # When fitted, then the coefficients come back
    fitted = fit_colour_transform(source, target, ridge=1e-9)
    assert np.abs(fitted.coefficients - truth).max() < 1e-3


def test_fit_approximates_a_realistic_grade_on_new_colours(rng):
    source = rng.uniform(0, 1, (5000, 3))
    fitted = fit_colour_transform(source, graded(source))
    held_out = rng.uniform(0.02, 0.98, (2000, 3))
    error = np.abs(fitted.apply_srgb(held_out) - graded(held_out)) * 255
    # a polynomial cannot follow x^0.9 into the deepest shadows exactly: a few levels there at most
    assert error.mean() < 1.0 and error.max() < 12.0


def test_weights_select_the_samples_that_count(rng):
    # Given half the samples graded one way and half another, weights decide which grade is fitted
    source = rng.uniform(0, 1, (2000, 3))
    target = graded(source)
    target[1000:] = source[1000:]  # identity on the second half
    weights = np.r_[np.ones(1000), np.zeros(1000)]
    fitted = fit_colour_transform(source, target, weights)
    assert np.abs(fitted.apply_srgb(source[:1000]) - target[:1000]).mean() * 255 < 1.0


def test_flat_samples_stay_near_identity_elsewhere(rng):
    # Given a foreground of one colour (nearly flat), shifted slightly
    source = np.clip(np.array([0.5, 0.4, 0.3]) + rng.normal(0, 0.002, (500, 3)), 0, 1)
    target = np.clip(source + np.array([0.03, 0.0, -0.02]), 0, 1)
    fitted = fit_colour_transform(source, target)
    # Then that colour moves as asked, and far-away colours are not thrown around
    assert np.abs(fitted.apply_srgb(source) - target).mean() * 255 < 1.5
    far = rng.uniform(0, 1, (500, 3))
    assert np.abs(fitted.apply_srgb(far) - far).mean() * 255 < 25


def test_lut_table_layout_and_identity():
    identity = ColourTransform(IDENTITY_COEFFICIENTS.copy())
    table = identity.lut_table(5)
    assert table.shape == (5, 5, 5, 3) and table.dtype == np.float32
    axis = np.linspace(0, 1, 5)
    assert np.allclose(table[0, 0, :, 0], axis, atol=1e-6)  # red varies along the last index
    assert np.allclose(table[:, 0, 0, 2], axis, atol=1e-6)  # blue along the first
    assert np.allclose(table[0, :, 0, 1], axis, atol=1e-6)


def test_fit_input_errors(rng):
    with pytest.raises(ValueError):
        fit_colour_transform(np.zeros((0, 3)), np.zeros((0, 3)))
    with pytest.raises(ValueError):
        fit_colour_transform(np.zeros((4, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="weights"):
        fit_colour_transform(np.ones((4, 3)) / 2, np.ones((4, 3)) / 2, np.zeros(4))
