"""A second family of colour grades, for evaluation: photographic edits applied to pixels.

The training data is graded by ``ssh_model.lut_generator`` (random 3D LUTs). A model that has only
learned to undo *that* generator would look good on composites graded by it and fail on the edits
people really make, so the quality benchmark re-grades its foregrounds with this family instead:
its own code and its own parameter ranges, the operations of a photo editor's basic panel:

1. white balance (temperature: red vs blue; tint: green vs magenta) and exposure, as gains in
   linear light, highlights above ``KNEE`` compressed so that none clips;
2. a contrast S-curve ``x - c sin(2 pi x) / (2 pi)`` (monotone for |c| < 1) and a gamma, in sRGB;
3. saturation and split toning (one tint in the shadows, another in the highlights) around luma;
4. sometimes a "look": a LUT of the training generator drawn from a seed of ``LOOK_SEEDS``, a range of
   small integers the training banks never draw (their seeds are 63-bit hashes, ``lut_generator.bank_seed``).

A grade is a frozen parameter set; ``scaled(s)`` multiplies every parameter by ``s`` (0 is exactly the
identity), which is how the benchmark sets the size of a mismatch (``ssh_model.quality_set``).
Pure numpy on (..., 3) uint8 or float arrays; no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from ssh_model.colour import linear_to_srgb, srgb_to_linear
from ssh_model.lut import apply_lut, random_lut

LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)  # Rec.709
KNEE = 0.8  # linear-light value above which highlights are compressed towards 1
LOOK_SEEDS = (1_000_000, 2_000_000)  # [low, high): seeds of the optional look
LOOK_PROBABILITY = 0.3


@dataclass(frozen=True)
class PhotoGrade:
    """The parameters of one edit; all zero is the identity.

    Args:
        temperature: log2 gain of red over blue (positive = warmer), split evenly between them.
        tint: log2 gain of magenta over green (positive = more magenta).
        exposure: exposure change in stops.
        contrast: S-curve amount in (-1, 1) (negative flattens).
        gamma: log of the gamma exponent (positive darkens the mid-tones).
        saturation: log of the chroma factor.
        shadow_tint, highlight_tint: (red, blue) chroma offsets added in the shadows / highlights.
        look_seed: a ``random_lut`` seed of the training generator (0 = no look).
        look_strength: the look's strength.
    """

    temperature: float = 0.0
    tint: float = 0.0
    exposure: float = 0.0
    contrast: float = 0.0
    gamma: float = 0.0
    saturation: float = 0.0
    shadow_tint: tuple[float, float] = (0.0, 0.0)
    highlight_tint: tuple[float, float] = (0.0, 0.0)
    look_seed: int = 0
    look_strength: float = 0.0

    def scaled(self, strength: float) -> PhotoGrade:
        """The same edit with every parameter multiplied by ``strength`` (contrast kept inside (-0.95, 0.95))."""
        s = float(strength)
        return replace(
            self,
            temperature=self.temperature * s,
            tint=self.tint * s,
            exposure=self.exposure * s,
            contrast=float(np.clip(self.contrast * s, -0.95, 0.95)),
            gamma=self.gamma * s,
            saturation=self.saturation * s,
            shadow_tint=(self.shadow_tint[0] * s, self.shadow_tint[1] * s),
            highlight_tint=(self.highlight_tint[0] * s, self.highlight_tint[1] * s),
            look_strength=self.look_strength * s,
        )

    def describe(self) -> str:
        parts = [
            f"temp {self.temperature:+.2f}",
            f"tint {self.tint:+.2f}",
            f"ev {self.exposure:+.2f}",
            f"contrast {self.contrast:+.2f}",
            f"gamma {self.gamma:+.2f}",
            f"sat {self.saturation:+.2f}",
        ]
        if any(self.shadow_tint) or any(self.highlight_tint):
            parts.append("split ({:+.2f},{:+.2f})/({:+.2f},{:+.2f})".format(*self.shadow_tint, *self.highlight_tint))
        if self.look_seed:
            parts.append(f"look {self.look_seed}@{self.look_strength:.2f}")
        return ", ".join(parts)


def _signed(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high) * rng.choice((-1.0, 1.0)))


def random_grade(rng: np.random.Generator) -> PhotoGrade:
    """One edit at its designed (unit) strength: every operation present, sizes and signs drawn from ``rng``."""
    hue = rng.uniform(0, 2 * math.pi)
    amount = rng.uniform(0.0, 0.08) if rng.random() < 0.5 else 0.0
    shadow = (amount * math.cos(hue), amount * math.sin(hue))
    highlight = (-shadow[0] * rng.uniform(0.5, 1.0), -shadow[1] * rng.uniform(0.5, 1.0))  # complementary
    look = rng.random() < LOOK_PROBABILITY
    return PhotoGrade(
        temperature=_signed(rng, 0.1, 0.6),
        tint=float(rng.uniform(-0.25, 0.25)),
        exposure=_signed(rng, 0.1, 0.8),
        contrast=float(rng.uniform(-0.4, 0.7)),
        gamma=float(rng.uniform(-0.3, 0.3)),
        saturation=float(rng.uniform(-0.7, 0.5)),
        shadow_tint=shadow,
        highlight_tint=highlight,
        look_seed=int(rng.integers(*LOOK_SEEDS)) if look else 0,
        look_strength=float(rng.uniform(0.3, 0.8)) if look else 0.0,
    )


def _roll_off(linear: np.ndarray, peak: float) -> np.ndarray:
    """Values above ``KNEE`` compressed linearly so that ``peak`` (the largest gain applied to 1.0) lands
    on 1; the identity when ``peak`` <= 1 (no gain pushes anything out of range)."""
    if peak <= 1.0:
        return linear
    return np.where(linear > KNEE, KNEE + (linear - KNEE) * (1.0 - KNEE) / (peak - KNEE), linear)


def apply_grade(image: np.ndarray, grade: PhotoGrade) -> np.ndarray:
    """Apply ``grade`` to (..., 3) uint8 sRGB pixels; returns uint8 of the same shape."""
    if image.shape[-1] != 3:
        raise ValueError(f"apply_grade expects (..., 3) pixels, got shape {image.shape}")
    rgb = image.astype(np.float32) / 255.0
    # 1. White balance and exposure: gains in linear light.
    log_gains = grade.exposure + np.array(
        [grade.temperature / 2 + grade.tint / 2, -grade.tint / 2, -grade.temperature / 2 + grade.tint / 2], dtype=np.float32
    )
    gains = np.exp2(log_gains)
    linear = srgb_to_linear(rgb) * gains
    rgb = linear_to_srgb(_roll_off(linear, float(gains.max()))).astype(np.float32)
    # 2. Tone: contrast S-curve, then gamma.
    rgb = rgb - grade.contrast * np.sin(2 * np.pi * rgb) / (2 * np.pi)
    rgb = np.clip(rgb, 0.0, 1.0) ** math.exp(grade.gamma)
    # 3. Colour around luma: saturation, then split toning weighted by darkness / brightness.
    luma = rgb @ LUMA  # (...)
    chroma = (rgb - luma[..., None]) * math.exp(grade.saturation)
    for (red, blue), weight in ((grade.shadow_tint, (1.0 - luma) ** 2), (grade.highlight_tint, luma**2)):
        offset = np.array([red, 0.0, blue], dtype=np.float32)
        offset[1] = -(LUMA[0] * red + LUMA[2] * blue) / LUMA[1]  # a pure chroma offset: luma unchanged
        chroma = chroma + weight[..., None] * offset
    rgb = np.clip(luma[..., None] + chroma, 0.0, 1.0)
    out = np.rint(rgb * 255.0).astype(np.uint8)
    # 4. The optional look.
    if grade.look_seed and grade.look_strength > 0:
        out = apply_lut(out.reshape(-1, 1, 3), random_lut(grade.look_seed, strength=grade.look_strength))
        out = out.reshape(image.shape)
    return out


__all__ = ["LOOK_SEEDS", "PhotoGrade", "apply_grade", "random_grade"]
