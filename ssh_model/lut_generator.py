"""A seeded generator of realistic colour grades, rendered on a 3D LUT grid (numpy only).

``random_lut(seed, size, strength)`` is one grade; ``lut_bank(seed, count)`` is ``count`` of them,
item ``i`` being ``random_lut(bank_seed(seed, i))`` named ``gen-s{seed}-i{i}``, every grade at full
strength or at strengths drawn from a distribution (``STRENGTH_DISTRIBUTIONS``: "mild" makes most
grades gentle, the recipe measured best in ``benchmarks/bench_recipe.py``). Both are re-exported by
``ssh_model.lut``.

A grade is a short recipe of parametric operations, applied in the order a colourist's node tree
would apply them, to the identity grid of sRGB-encoded (r, g, b) values in [0, 1]:

1. ``white_balance`` / ``exposure`` -- per-channel gains (temperature: red vs blue, tint: green vs
   magenta) and a global gain of 2**ev, in linear light; highlights pushed above 1 are rolled
   off smoothly (``compress_top``), never hard-clipped.
2. Tone curves, per channel, each monotone from [0, 1] to [0, 1]:
   ``crush`` (input black/white points: crushed blacks, clipped whites, a few % at most),
   ``contrast`` (S-curve or flattening around mid-grey), ``gamma``,
   ``fade`` (film look: lifted blacks, lowered white, highlight roll-off),
   ``cross_process`` (slightly different gamma and black lift per channel).
3. Colour, in a luma/chroma (Rec.709 YCbCr) decomposition: ``mix`` (channel mixing, small
   off-diagonal terms, grey stays grey), ``saturation`` (boost, reduce, or a strong desaturation),
   ``hue`` (rotation of the CbCr plane), ``split_tone`` (one tint in the shadows, another -- often
   the complementary one -- in the highlights).
4. Gamut mapping: luma clamped to [0, 1], then chroma scaled down just enough to bring every
   channel into [0, 1] (hue and luma kept; no per-channel clipping).

Plausibility by construction: every stage before ``mix`` is monotone per channel, ``mix`` keeps
all luma weights positive, and the colour stages and the gamut mapping keep luma exactly, so the
luma of the output never decreases along any path on which no input channel decreases (no
solarisation); outputs lie in [0, 1].

Randomness: each operation is enabled with its own probability (at least ``MIN_STEPS`` are);
its parameters are drawn from ranges that exclude negligible values, then multiplied by
``strength``. The random draws do not depend on ``strength``, so the same seed at another strength
is the same grade, milder or stronger; ``strength=0`` is exactly the identity.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from ssh_model.colour import linear_to_srgb, srgb_to_linear

if TYPE_CHECKING:
    from ssh_model.lut import LUT

LUMA = np.array([0.2126, 0.7152, 0.0722])  # Rec.709 luma weights (r, g, b)
MIN_STEPS = 3
MAX_GAIN = 1.9  # largest linear gain of white balance x exposure (the roll-off needs gain <= 2)


@dataclass(frozen=True)
class Step:
    """One operation of a grade: its name and its (strength-scaled) parameters."""

    name: str
    params: dict[str, float | tuple[float, ...]] = field(default_factory=dict)

    def describe(self) -> str:
        def fmt(value: float | tuple[float, ...]) -> str:
            if isinstance(value, tuple):
                return "(" + ",".join(f"{v:+.3f}" for v in value) + ")"
            return f"{value:+.3f}"

        return f"{self.name}(" + " ".join(f"{k}={fmt(v)}" for k, v in self.params.items()) + ")"


# -- drawing a recipe ------------------------------------------------------------------------------


def _signed(rng: np.random.Generator, low: float, high: float) -> float:
    """A magnitude in [low, high] with a random sign."""
    return float(rng.uniform(low, high) * rng.choice((-1.0, 1.0)))


def _draw_white_balance(rng: np.random.Generator, s: float) -> dict:
    return {"temperature": s * _signed(rng, 0.08, 0.4), "tint": s * float(rng.uniform(-0.12, 0.12))}


def _draw_exposure(rng: np.random.Generator, s: float) -> dict:
    return {"ev": s * _signed(rng, 0.1, 0.6)}


def _draw_crush(rng: np.random.Generator, s: float) -> dict:
    return {"black": s * float(rng.uniform(0.01, 0.04)), "white": 1.0 - s * float(rng.uniform(0.0, 0.03))}


def _draw_contrast(rng: np.random.Generator, s: float) -> dict:
    amount = rng.uniform(0.15, 0.8) if rng.random() < 0.7 else -rng.uniform(0.15, 0.45)
    return {"amount": float(np.clip(s * amount, -1.0, 1.0))}


def _draw_gamma(rng: np.random.Generator, s: float) -> dict:
    return {"gamma": math.exp(s * _signed(rng, 0.08, 0.3))}


def _draw_fade(rng: np.random.Generator, s: float) -> dict:
    return {
        "lift": s * float(rng.uniform(0.02, 0.09)),
        "white": 1.0 - s * float(rng.uniform(0.0, 0.07)),
        "rolloff": float(min(0.5, s * rng.uniform(0.15, 0.45))),
        "knee": float(rng.uniform(0.55, 0.75)),
    }


def _draw_cross_process(rng: np.random.Generator, s: float) -> dict:
    gammas = tuple(math.exp(s * g) for g in rng.uniform(-0.15, 0.15, 3))
    lifts = tuple(float(s * v) for v in rng.uniform(0.0, 0.04, 3))
    return {"gammas": gammas, "lifts": lifts}


def _draw_mix(rng: np.random.Generator, s: float) -> dict:
    off = rng.uniform(-0.05, 0.1, (3, 3)) * s
    np.fill_diagonal(off, 0.0)
    return {"offdiagonal": tuple(float(v) for v in off.ravel())}


def _draw_saturation(rng: np.random.Generator, s: float) -> dict:
    roll = rng.random()
    if roll < 0.12:
        factor = 1.0 - rng.uniform(0.5, 0.85)  # a strong desaturation (bleach bypass, near monochrome)
    elif roll < 0.55:
        factor = 1.0 - rng.uniform(0.1, 0.4)
    else:
        factor = 1.0 + rng.uniform(0.1, 0.35)
    return {"factor": float(max(0.0, 1.0 + s * (factor - 1.0)))}


def _draw_hue(rng: np.random.Generator, s: float) -> dict:
    return {"degrees": s * _signed(rng, 4.0, 20.0)}


def _draw_split_tone(rng: np.random.Generator, s: float) -> dict:
    shadow_hue = float(rng.uniform(0.0, 2 * math.pi))
    if rng.random() < 0.6:  # complementary tints, e.g. teal shadows and orange highlights
        highlight_hue = shadow_hue + math.pi + float(rng.uniform(-0.7, 0.7))
    else:
        highlight_hue = float(rng.uniform(0.0, 2 * math.pi))
    return {
        "shadow_hue": shadow_hue,
        "shadow_amount": s * float(rng.uniform(0.03, 0.09)),
        "highlight_hue": highlight_hue % (2 * math.pi),
        "highlight_amount": s * float(rng.uniform(0.03, 0.09)),
    }


# name -> (probability of being enabled, parameter drawer), in the order the steps are applied
OPERATIONS: dict[str, tuple[float, Callable[[np.random.Generator, float], dict]]] = {
    "white_balance": (0.7, _draw_white_balance),
    "exposure": (0.55, _draw_exposure),
    "crush": (0.2, _draw_crush),
    "contrast": (0.6, _draw_contrast),
    "gamma": (0.45, _draw_gamma),
    "fade": (0.3, _draw_fade),
    "cross_process": (0.2, _draw_cross_process),
    "mix": (0.35, _draw_mix),
    "saturation": (0.6, _draw_saturation),
    "hue": (0.3, _draw_hue),
    "split_tone": (0.45, _draw_split_tone),
}


def draw_grade(rng: np.random.Generator, strength: float = 1.0) -> list[Step]:
    """A random grade: the enabled steps, in application order, with parameters scaled by ``strength``."""
    if not strength >= 0.0 or not math.isfinite(strength):
        raise ValueError(f"strength must be a finite number >= 0, got {strength}")
    names = list(OPERATIONS)
    enabled = [bool(rng.random() < OPERATIONS[name][0]) for name in names]
    missing = MIN_STEPS - sum(enabled)
    if missing > 0:
        off = [i for i, on in enumerate(enabled) if not on]
        for i in rng.choice(off, size=missing, replace=False):
            enabled[int(i)] = True
    params = {name: OPERATIONS[name][1](rng, strength) for name in names}  # always drawn: stable stream
    return [Step(name, params[name]) for name, on in zip(names, enabled, strict=True) if on]


# -- rendering -------------------------------------------------------------------------------------


def compress_top(x: np.ndarray, top: float) -> np.ndarray:
    """Map [0, top] onto [0, 1]: identity below a knee, then a C1 quadratic shoulder (needs top <= 2)."""
    if top <= 1.0:
        return x
    knee = 2.0 - top
    t = np.clip((x - knee) / (top - knee), 0.0, 1.0)
    slope = (top - knee) / (1.0 - knee)  # keeps the slope 1 at the knee; 1 <= slope <= 2
    shoulder = knee + (1.0 - knee) * (slope * t + (1.0 - slope) * t * t)
    return np.where(x > knee, shoulder, x)


def _gains(steps: dict[str, dict]) -> np.ndarray:
    gains = np.ones(3)
    if "white_balance" in steps:
        p = steps["white_balance"]
        gains = np.exp(
            np.array([p["temperature"] / 2 + p["tint"] / 3, -p["tint"] * 2 / 3, -p["temperature"] / 2 + p["tint"] / 3])
        )
        gains = gains / float(LUMA @ gains)  # white balance alone keeps white's luma
    if "exposure" in steps:
        gains = gains * 2.0 ** steps["exposure"]["ev"]
    top = float(gains.max())
    return gains * (MAX_GAIN / top) if top > MAX_GAIN else gains


def _to_ycc(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = rgb @ LUMA
    return y, (rgb[:, 2] - y) / (2 * (1 - LUMA[2])), (rgb[:, 0] - y) / (2 * (1 - LUMA[0]))


def _from_ycc(y: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> np.ndarray:
    r = y + 2 * (1 - LUMA[0]) * cr
    b = y + 2 * (1 - LUMA[2]) * cb
    g = (y - LUMA[0] * r - LUMA[2] * b) / LUMA[1]
    return np.stack([r, g, b], axis=1)


def _mix_matrix(offdiagonal: tuple[float, ...]) -> np.ndarray:
    """I + off-diagonal terms, rows summing to 1 (grey stays grey), luma weights kept positive."""
    off = np.asarray(offdiagonal).reshape(3, 3)
    for _ in range(20):
        matrix = np.eye(3) + off - np.diag(off.sum(axis=1))
        if (LUMA @ matrix).min() >= 0.02:
            return matrix
        off = off * 0.7
    return np.eye(3)


def gamut_map(rgb: np.ndarray) -> np.ndarray:
    """Clamp luma to [0, 1], then scale chroma down (per colour) until every channel is in [0, 1]."""
    y = np.clip(rgb @ LUMA, 0.0, 1.0)[:, None]
    chroma = rgb - y
    with np.errstate(divide="ignore", invalid="ignore"):
        room = np.where(chroma > 0, (1.0 - y) / chroma, np.where(chroma < 0, y / -chroma, np.inf))
    scale = np.minimum(1.0, room.min(axis=1, keepdims=True))
    return np.clip(y + scale * chroma, 0.0, 1.0)


def render_grade(steps: list[Step], rgb: np.ndarray) -> np.ndarray:
    """Apply ``steps`` to sRGB-encoded colours ``rgb`` (M, 3) in [0, 1]; returns (M, 3) float64 in [0, 1]."""
    x = np.asarray(rgb, dtype=np.float64).copy()  # (M, 3)
    by_name = {step.name: step.params for step in steps}
    if "white_balance" in by_name or "exposure" in by_name:
        gains = _gains(by_name)
        x = linear_to_srgb(compress_top(srgb_to_linear(x) * gains, float(gains.max())))
    if "crush" in by_name:
        p = by_name["crush"]
        x = np.clip((x - p["black"]) / (p["white"] - p["black"]), 0.0, 1.0)
    if "contrast" in by_name:
        a = by_name["contrast"]["amount"]  # |a| <= 1 keeps the curve monotone
        x = (1 - a) * x + a * x * x * (3 - 2 * x)
    if "gamma" in by_name:
        x = x ** by_name["gamma"]["gamma"]
    if "fade" in by_name:
        p = by_name["fade"]
        knee, rolloff = p["knee"], p["rolloff"]  # rolloff <= 0.5 keeps the shoulder monotone
        over = np.maximum(x - knee, 0.0)
        x = x - rolloff * over * over / (1 - knee)
        x = p["lift"] + (p["white"] - p["lift"]) * x
    if "cross_process" in by_name:
        p = by_name["cross_process"]
        lifts = np.asarray(p["lifts"])
        x = lifts + (1 - lifts) * x ** np.asarray(p["gammas"])
    if "mix" in by_name:
        x = x @ _mix_matrix(by_name["mix"]["offdiagonal"]).T
    if {"saturation", "hue", "split_tone"} & by_name.keys():
        y, cb, cr = _to_ycc(x)
        if "saturation" in by_name:
            cb, cr = cb * by_name["saturation"]["factor"], cr * by_name["saturation"]["factor"]
        if "hue" in by_name:
            angle = math.radians(by_name["hue"]["degrees"])
            cb, cr = cb * math.cos(angle) - cr * math.sin(angle), cb * math.sin(angle) + cr * math.cos(angle)
        if "split_tone" in by_name:
            p = by_name["split_tone"]
            yc = np.clip(y, 0.0, 1.0)
            shadows, highlights = p["shadow_amount"] * (1 - yc) ** 2, p["highlight_amount"] * yc**2
            cb = cb + shadows * math.cos(p["shadow_hue"]) + highlights * math.cos(p["highlight_hue"])
            cr = cr + shadows * math.sin(p["shadow_hue"]) + highlights * math.sin(p["highlight_hue"])
        x = _from_ycc(y, cb, cr)
    return gamut_map(x)


def describe_grade(steps: list[Step]) -> str:
    return "; ".join(step.describe() for step in steps) or "identity"


# -- LUTs (re-exported by ssh_model.lut) ------------------------------------------------------------


def random_lut(seed: int, size: int = 33, strength: float = 1.0) -> LUT:
    """A realistic colour grade (see the module docstring) drawn from ``default_rng(seed)``.

    ``strength`` scales every parameter (0 is the identity, 1 the designed range); the random
    choices do not depend on it, so one seed at several strengths is one grade, milder or stronger.
    The name is ``gen-{seed}``; the title lists the recipe.
    """
    from ssh_model.lut import LUT, identity_grid  # at call time: ssh_model.lut imports this module

    steps = draw_grade(np.random.default_rng(seed), strength)
    table = render_grade(steps, identity_grid(size).reshape(-1, 3)).reshape(size, size, size, 3)
    return LUT(table, title=f"gen-{seed} strength={strength:g}: {describe_grade(steps)}", name=f"gen-{seed}")


def bank_seed(seed: int, index: int) -> int:
    """The seed of grade ``index`` of bank ``seed``: 63 bits from ``SeedSequence([seed, index])``."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0] >> np.uint64(1))


STRENGTH_DISTRIBUTIONS = ("full", "mixed", "mild")


def draw_strength(distribution: str, rng: np.random.Generator) -> float:
    """A grade strength: "full" 1; "mixed" uniform in [0.1, 1]; "mild" u^2 (u uniform in [0, 1]: median
    0.25, a quarter of the grades below 0.06, so many pairs of grades are nearly the same)."""
    if distribution == "full":
        return 1.0
    if distribution == "mixed":
        return float(rng.uniform(0.1, 1.0))
    if distribution == "mild":
        return float(rng.uniform(0.0, 1.0) ** 2)
    raise ValueError(f"unknown strength distribution {distribution!r}; expected one of {STRENGTH_DISTRIBUTIONS}")


def lut_bank(seed: int, count: int = 100, size: int = 33, strength: float = 1.0, distribution: str = "full") -> list[LUT]:
    """``count`` distinct grades: item ``i`` is ``random_lut(bank_seed(seed, i), size, strength * s_i)``
    renamed ``gen-s{seed}-i{i}`` (its title keeps the ``gen-{bank seed}`` it came from), where ``s_i`` is
    drawn from ``distribution`` in order by ``default_rng([seed, 7])`` (always 1 for "full")."""
    if count < 0 or seed < 0:
        raise ValueError(f"lut_bank needs seed >= 0 and count >= 0, got seed={seed}, count={count}")
    rng = np.random.default_rng([seed, 7])
    strengths = [strength * draw_strength(distribution, rng) for _ in range(count)]
    return [replace(random_lut(bank_seed(seed, i), size, strengths[i]), name=f"gen-s{seed}-i{i}") for i in range(count)]
