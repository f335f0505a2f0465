"""A second model family: predict a colour transform, not pixels.

SSH's network re-renders the content at 256 px and, at full resolution, a colour transform is
fitted after the fact. ``ColourNet`` predicts the transform directly: a small shared encoder looks
at the content and at the reference, and a head outputs the coefficients of a 14-term
root-polynomial colour transform in linear RGB (Finlayson et al. 2015, plus a constant for lifted
blacks), one per cell of a ``grid x grid`` layout blended bilinearly over the image (``grid=1``: one
global transform). The transform is identity at initialisation, and applying it at any resolution
is exact: no fitting step, no detail lost.

    content (B,3,H,W) --area resize--> Encoder --(feature map, pooled code)-+
                                                                            +--> Head --> coefficients
    reference (B,3,H',W') --area resize--> Encoder --(pooled code)---------+     (B, 14*3, G, G)
    content --linear RGB--> root_polynomial_features (B,14,H,W) x coefficients --> (B,3,H,W)

``forward(content, reference)`` has ``SSHNet``'s contract (images in [-1, 1] in, the re-rendered
content out), so the losses, the training loop, the evaluation and the checkpoints take either.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ROOT_TERMS = (
    "r",
    "g",
    "b",
    "(rg)^1/2",
    "(gb)^1/2",
    "(rb)^1/2",
    "(r2g)^1/3",
    "(r2b)^1/3",
    "(g2r)^1/3",
    "(g2b)^1/3",
    "(b2r)^1/3",
    "(b2g)^1/3",
    "(rgb)^1/3",
    "1",
)
NUM_TERMS = len(ROOT_TERMS)


def srgb_to_linear(x: Tensor) -> Tensor:
    """sRGB values in [0, 1] -> linear light (IEC 61966-2-1)."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: Tensor) -> Tensor:
    """Linear light (clamped to [0, 1]) -> sRGB values in [0, 1]."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.0031308, x * 12.92, 1.055 * x.clamp_min(1e-8) ** (1 / 2.4) - 0.055)


def root_polynomial_features(linear: Tensor) -> Tensor:
    """(B, 3, H, W) linear RGB in [0, 1] -> (B, 14, H, W) in the order of ``ROOT_TERMS``.

    Every term but the constant scales with exposure (doubling the light doubles it), so a transform
    fitted at one brightness holds at another.
    """
    r, g, b = linear.clamp_min(0.0).unbind(dim=1)  # (B, H, W) each
    third = 1.0 / 3.0
    terms = [
        r,
        g,
        b,
        (r * g).sqrt(),
        (g * b).sqrt(),
        (r * b).sqrt(),
        (r * r * g) ** third,
        (r * r * b) ** third,
        (g * g * r) ** third,
        (g * g * b) ** third,
        (b * b * r) ** third,
        (b * b * g) ** third,
        (r * g * b) ** third,
        torch.ones_like(r),
    ]
    return torch.stack(terms, dim=1)


def identity_coefficients(device: torch.device | None = None) -> Tensor:
    """(14, 3): the transform that returns its input."""
    identity = torch.zeros(NUM_TERMS, 3, device=device)
    identity[:3] = torch.eye(3, device=device)
    return identity


def coefficient_field(
    coefficients: Tensor, height: int, width: int, box: tuple[float, float, float, float] | None = None
) -> Tensor:
    """Per-pixel coefficients (B, 42, h, w) bilinearly blended from the cell grid (B, 42, G, G).

    Args:
        coefficients: (B, 14 * 3, G, G), cell (i, j) centred on the image's (i + 0.5) / G height fraction.
        height, width: the size of the image the grid spans.
        box: the rows/columns wanted, as fractions (x0, y0, x1, y1) of that image (a tile); None = all.
    """
    x0, y0, x1, y1 = box or (0.0, 0.0, 1.0, 1.0)
    rows = y0 + (torch.arange(height, device=coefficients.device) + 0.5) * (y1 - y0) / height  # (h,) in [0, 1]
    cols = x0 + (torch.arange(width, device=coefficients.device) + 0.5) * (x1 - x0) / width  # (w,)
    grid_y, grid_x = torch.meshgrid(rows * 2 - 1, cols * 2 - 1, indexing="ij")  # (h, w) in [-1, 1]
    grid = torch.stack([grid_x, grid_y], dim=-1)[None].expand(coefficients.shape[0], -1, -1, -1)
    return F.grid_sample(
        coefficients, grid.to(coefficients.dtype), mode="bilinear", padding_mode="border", align_corners=False
    )


def apply_transform(srgb: Tensor, coefficients: Tensor, box: tuple[float, float, float, float] | None = None) -> Tensor:
    """Apply the predicted transform to images in [0, 1] sRGB.

    Args:
        srgb: (B, 3, h, w) in [0, 1].
        coefficients: (B, 14 * 3, G, G) from ``ColourNet.predict_coefficients``.
        box: where ``srgb`` sits in the image the grid spans (fractions x0, y0, x1, y1); None = all of it.

    Returns:
        (B, 3, h, w) sRGB in [0, 1].
    """
    batch, _, h, w = srgb.shape
    features = root_polynomial_features(srgb_to_linear(srgb))  # (B, 14, h, w)
    if coefficients.shape[-1] == 1 and coefficients.shape[-2] == 1:  # one global transform: no field
        matrix = coefficients.view(batch, NUM_TERMS, 3)
        linear = torch.einsum("bthw,btc->bchw", features, matrix)
    else:
        field = coefficient_field(coefficients, h, w, box).view(batch, NUM_TERMS, 3, h, w)
        linear = (features[:, :, None] * field).sum(dim=1)  # (B, 3, h, w)
    return linear_to_srgb(linear)


class Encoder(nn.Module):
    """Four stride-2 3x3 convs (w, 2w, 4w, 8w; LeakyReLU, no norm: the colour statistics are the signal).

    Returns the last feature map (B, 8w, s/16, s/16) and a code (B, 16w + 6): the map's mean and
    standard deviation over space, and the image's per-channel mean and standard deviation.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        widths = [width * 2**i for i in range(4)]
        layers: list[nn.Module] = []
        for cin, cout in zip([3, *widths[:-1]], widths, strict=True):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        self.convs = nn.Sequential(*layers)
        self.code_size = 2 * widths[-1] + 6

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # (B, 3, s, s) in [-1, 1]
        features = self.convs(x)  # (B, 8w, s/16, s/16)
        stats = [features.mean(dim=(2, 3)), features.std(dim=(2, 3)), x.mean(dim=(2, 3)), x.std(dim=(2, 3))]
        return features, torch.cat(stats, dim=1)  # (B, 16w + 6)


class ColourNet(nn.Module):
    """Predicts a colour transform that makes the content look like the reference.

    Args:
        width: channels of the encoder's first conv (w, 2w, 4w, 8w).
        grid: cells per side of the transform grid (1 = one global transform).
        encoder_size: both images are area-resized to this square side before the encoder (the
            transform is applied at the content's own size).
        hidden: width of the head's hidden layer.
    """

    predicts_transform = True

    def __init__(self, width: int = 16, grid: int = 1, encoder_size: int = 64, hidden: int = 256) -> None:
        super().__init__()
        if width < 1 or grid < 1 or hidden < 1 or encoder_size < 16:
            raise ValueError(
                f"need width, grid, hidden >= 1 and encoder_size >= 16; got {width}, {grid}, {hidden}, {encoder_size}"
            )
        self.config: dict[str, Any] = {
            "family": "colour",
            "width": int(width),
            "grid": int(grid),
            "encoder_size": int(encoder_size),
            "hidden": int(hidden),
        }
        self.encoder = Encoder(width)
        cell_channels = 8 * width
        code = self.encoder.code_size
        self.head = nn.Sequential(
            nn.Conv2d(cell_channels + 3 * code, hidden, 1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(hidden, hidden, 1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(hidden, NUM_TERMS * 3, 1),
        )
        nn.init.zeros_(self.head[-1].weight)  # identity at initialisation
        nn.init.zeros_(self.head[-1].bias)
        self.register_buffer("identity", identity_coefficients().reshape(NUM_TERMS * 3, 1, 1), persistent=False)

    def _encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        side = self.config["encoder_size"]
        return self.encoder(F.interpolate(x, size=(side, side), mode="area"))

    def style_code(self, x: Tensor) -> Tensor:
        """The appearance code of images (B, 3, H, W) in [-1, 1] -> (B, 16w + 6) (for the style loss)."""
        return self._encode(x)[1]

    def predict_coefficients(self, content: Tensor, reference: Tensor) -> Tensor:
        """content (B, 3, H, W), reference (B, 3, H', W') in [-1, 1] -> coefficients (B, 14 * 3, G, G)."""
        grid = self.config["grid"]
        cells, content_code = self._encode(content)  # (B, 8w, s/16, s/16), (B, code)
        _, reference_code = self._encode(reference)  # (B, code)
        cells = F.adaptive_avg_pool2d(cells, grid)  # (B, 8w, G, G)
        codes = torch.cat([content_code, reference_code, reference_code - content_code], dim=1)  # (B, 3 code)
        x = torch.cat([cells, codes[:, :, None, None].expand(-1, -1, grid, grid)], dim=1)
        return self.identity + self.head(x)  # (B, 42, G, G)

    def forward(self, content: Tensor, reference: Tensor) -> Tensor:
        """content (B, 3, H, W), reference (B, 3, H', W') in [-1, 1] -> content re-coloured, (B, 3, H, W)."""
        coefficients = self.predict_coefficients(content, reference)
        return apply_transform((content + 1.0) * 0.5, coefficients.float()) * 2.0 - 1.0


def colour_full() -> ColourNet:
    """Width 32, a 4x4 grid of transforms (about 1.6 M parameters): GPUs."""
    return ColourNet(width=32, grid=4, hidden=512)


def colour_small() -> ColourNet:
    """Width 16, one global transform (about 0.4 M parameters): CPU training in minutes."""
    return ColourNet(width=16, grid=1)


def colour_grid_small() -> ColourNet:
    """Width 16, a 4x4 grid of transforms blended bilinearly: the spatially varying variant."""
    return ColourNet(width=16, grid=4)


def colour_tiny() -> ColourNet:
    """Width 4 (tests)."""
    return ColourNet(width=4, grid=1, hidden=32)


PRESETS: dict[str, Callable[[], ColourNet]] = {
    "full": colour_full,
    "small": colour_small,
    "grid-small": colour_grid_small,
    "tiny": colour_tiny,
}


__all__ = [
    "NUM_TERMS",
    "PRESETS",
    "ROOT_TERMS",
    "ColourNet",
    "Encoder",
    "apply_transform",
    "coefficient_field",
    "colour_full",
    "colour_grid_small",
    "colour_small",
    "colour_tiny",
    "identity_coefficients",
    "linear_to_srgb",
    "root_polynomial_features",
    "srgb_to_linear",
]
