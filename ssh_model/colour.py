"""The global colour transform that carries the network's low-resolution result to full resolution.

SSH's release fits a 17-term polynomial colour correction (Cheung et al. 2004) from the network's
input to its output, in linear RGB, and applies it to the full-resolution foreground. The 17
terms are those of colour-science's ``matrix_augmented_Cheung2004(terms=17)``:

    r, g, b, rg, rb, gb, r^2, g^2, b^2, rgb, r^2 g, g^2 b, b^2 r, r^3, g^3, b^3, 1

(r, g, b linear, in [0, 1]). The fit is weighted least squares with a small ridge term that
pulls the coefficients towards the identity transform (not towards zero): colours the samples do
not constrain (e.g. a nearly flat foreground) then stay close to unchanged instead of drifting.

The fitted transform is baked into a 3D LUT over sRGB (linearisation inside), so applying it to
millions of pixels is one ``Color3DLUT`` pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TERMS = ("r", "g", "b", "rg", "rb", "gb", "r2", "g2", "b2", "rgb", "r2g", "g2b", "b2r", "r3", "g3", "b3", "1")
RIDGE = 1e-4  # relative to the mean weighted feature energy


def srgb_to_linear(values: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] -> linear light (IEC 61966-2-1), same shape, float64."""
    v = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(values: np.ndarray) -> np.ndarray:
    """Linear light in [0, 1] (clipped) -> sRGB-encoded values in [0, 1], float64."""
    v = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    return np.where(v <= 0.0031308, v * 12.92, 1.055 * v ** (1 / 2.4) - 0.055)


def polynomial_features(rgb: np.ndarray) -> np.ndarray:
    """(N, 3) linear RGB -> (N, 17) features in the order of ``TERMS``."""
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    return np.stack(
        [
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
            np.ones_like(r),
        ],
        axis=1,
    )


IDENTITY_COEFFICIENTS = np.zeros((len(TERMS), 3))
IDENTITY_COEFFICIENTS[:3] = np.eye(3)


@dataclass(frozen=True, eq=False)
class ColourTransform:
    """A fitted 17-term polynomial in linear RGB: ``out_linear = features(in_linear) @ coefficients``."""

    coefficients: np.ndarray  # (17, 3)

    def apply_linear(self, rgb_linear: np.ndarray) -> np.ndarray:
        """(N, 3) linear RGB -> (N, 3) linear RGB, clipped to [0, 1]."""
        return np.clip(polynomial_features(rgb_linear) @ self.coefficients, 0.0, 1.0)

    def apply_srgb(self, rgb: np.ndarray) -> np.ndarray:
        """(..., 3) sRGB in [0, 1] -> (..., 3) sRGB in [0, 1]."""
        flat = np.asarray(rgb, dtype=np.float64).reshape(-1, 3)
        return linear_to_srgb(self.apply_linear(srgb_to_linear(flat))).reshape(np.shape(rgb))

    def lut_table(self, size: int = 33) -> np.ndarray:
        """float32 (size, size, size, 3) over sRGB inputs, indexed [b, g, r] (``.cube`` order)."""
        axis = np.linspace(0.0, 1.0, size)
        b, g, r = np.meshgrid(axis, axis, axis, indexing="ij")  # red varies fastest in C order
        lattice = np.stack([r, g, b], axis=-1)  # (size, size, size, 3)
        return self.apply_srgb(lattice).astype(np.float32)


def fit_colour_transform(
    source: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None, ridge: float = RIDGE
) -> ColourTransform:
    """Weighted ridge least squares of the 17-term polynomial mapping ``source`` to ``target``.

    Args:
        source: (N, 3) sRGB in [0, 1] (the network's input colours).
        target: (N, 3) sRGB in [0, 1] (the network's output colours; clipped).
        weights: (N,) non-negative sample weights (e.g. the low-resolution mask); None = equal.
        ridge: strength of the pull towards the identity transform, relative to the mean
            weighted feature energy.
    """
    source = np.asarray(source, dtype=np.float64).reshape(-1, 3)
    target = np.asarray(target, dtype=np.float64).reshape(-1, 3)
    if source.shape != target.shape or len(source) == 0:
        raise ValueError(f"need matching non-empty (N, 3) samples, got {source.shape} and {target.shape}")
    w = np.ones(len(source)) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape != (len(source),) or (w < 0).any() or w.sum() <= 0:
        raise ValueError("weights must be (N,) non-negative with a positive sum")
    features = polynomial_features(srgb_to_linear(source))  # (N, 17)
    goal = srgb_to_linear(target)  # (N, 3)
    weighted = features * w[:, None]
    gram = features.T @ weighted  # (17, 17)
    penalty = ridge * np.trace(gram) / len(TERMS)
    lhs = gram + penalty * np.eye(len(TERMS))
    rhs = weighted.T @ goal + penalty * IDENTITY_COEFFICIENTS
    return ColourTransform(np.linalg.solve(lhs, rhs))


__all__ = [
    "IDENTITY_COEFFICIENTS",
    "TERMS",
    "ColourTransform",
    "fit_colour_transform",
    "linear_to_srgb",
    "polynomial_features",
    "srgb_to_linear",
]
