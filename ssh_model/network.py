"""The SSH fusion network (Jiang et al. ICCV 2021), rebuilt from the authors' released model.

Small blocks first, then the network that stacks them (read top to bottom):

    content (B,3,H,W) --pad x16--> ContentEncoder --(skips, bottleneck)--+
                                                                         |  tile code, concat, 3x3 conv
    reference (B,3,H',W') --> StyleEncoder --> code (B,16w) ------------+--> Decoder --> (B,3,H,W)

With ``width=32`` and batch norm this has exactly the released model's 15,193,315 parameters.
Inputs and outputs live in [-1, 1]; the output has no activation (the network predicts pixels).

Choices the release does not pin down (ours): the 7x7 stem of the style encoder has no norm (that
is what makes the parameter count match exactly); the reference is not padded (it is globally
pooled, so any size works); the content is reflection-padded symmetrically (replicate padding
when the image is too small to reflect) and cropped back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

NORMS = ("batch", "instance", "group", "none")
MULTIPLE = 16  # four 2x poolings in the content encoder


def make_norm(kind: str, channels: int) -> nn.Module:
    """A 2D norm layer over ``channels``; "group" uses groups of at least 4 channels (at most 32 groups)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "group":
        groups = max([g for g in range(1, min(32, channels // 4) + 1) if channels % g == 0], default=1)
        return nn.GroupNorm(groups, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; expected one of {NORMS}")


class ConvActNorm(nn.Sequential):
    """conv -> activation -> norm (the release puts the norm after the activation)."""

    def __init__(self, cin: int, cout: int, kernel: int, norm: str, act: nn.Module, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2),
            act,
            make_norm(norm, cout),
        )


def leaky() -> nn.Module:
    return nn.LeakyReLU(0.2, inplace=True)


class DoubleConv(nn.Sequential):
    """Two 3x3 conv -> LeakyReLU(0.2) -> norm blocks: (B, cin, H, W) -> (B, cout, H, W)."""

    def __init__(self, cin: int, cout: int, norm: str) -> None:
        super().__init__(ConvActNorm(cin, cout, 3, norm, leaky()), ConvActNorm(cout, cout, 3, norm, leaky()))


class SqueezeExcite(nn.Module):
    """Channel attention: global mean -> c/4 -> ReLU -> c -> hard-sigmoid gate, times the input."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, channels // reduction, 1)
        self.expand = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, C, H, W)
        gate = x.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        gate = F.hardsigmoid(self.expand(F.relu(self.reduce(gate))))
        return x * gate


class ContentEncoder(nn.Module):
    """U-Net encoder: 5 DoubleConv stages (w .. 16w) with 2x2 max-pool between, SE on the bottleneck."""

    def __init__(self, width: int, norm: str) -> None:
        super().__init__()
        widths = [width * 2**i for i in range(5)]  # w, 2w, 4w, 8w, 16w
        inputs = [3, *widths[:-1]]
        pairs = zip(inputs, widths, strict=True)
        self.stages = nn.ModuleList(DoubleConv(cin, cout, norm) for cin, cout in pairs)
        self.se = SqueezeExcite(widths[-1])

    def forward(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        skips = []
        for i, stage in enumerate(self.stages):
            if i:
                x = F.max_pool2d(x, 2)
            x = stage(x)  # (B, w*2^i, H/2^i, W/2^i)
            skips.append(x)
        return skips[:-1], self.se(x)  # 4 skips, bottleneck (B, 16w, H/16, W/16)


class StyleEncoder(nn.Module):
    """7x7 stem, four stride-2 3x3 convs to 16w (conv -> ReLU -> norm), SE, global average pool."""

    def __init__(self, width: int, norm: str) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 7, padding=3), nn.ReLU(inplace=True))
        self.downs = nn.Sequential(
            *(ConvActNorm(width * 2**i, width * 2 ** (i + 1), 3, norm, nn.ReLU(inplace=True), stride=2) for i in range(4))
        )
        self.se = SqueezeExcite(width * 16)

    def forward(self, x: Tensor) -> Tensor:  # (B, 3, H, W) -> (B, 16w)
        x = self.downs(self.stem(x))  # (B, 16w, ~H/16, ~W/16)
        return self.se(x).mean(dim=(2, 3))


class UpBlock(nn.Module):
    """Bilinear x2, 3x3 conv halving channels, concat the skip, DoubleConv back to half the channels."""

    def __init__(self, cin: int, norm: str) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(cin, cin // 2, 3, padding=1)
        self.fuse = DoubleConv(cin, cin // 2, norm)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:  # (B,C,h,w), (B,C/2,2h,2w) -> (B,C/2,2h,2w)
        x = self.reduce(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
        return self.fuse(torch.cat([x, skip], dim=1))


def pad_to_multiple(x: Tensor, multiple: int = MULTIPLE) -> tuple[Tensor, tuple[int, int, int, int]]:
    """Reflection-pad (B, C, H, W) on all sides so H and W are multiples; returns the pad (l, r, t, b)."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
    if not any(pad):
        return x, pad
    mode = "reflect" if max(pad[:2]) < w and max(pad[2:]) < h else "replicate"
    return F.pad(x, pad, mode=mode), pad


class SSHNet(nn.Module):
    """The SSH harmonization network: re-renders the content in the reference's colour appearance.

    Args:
        width: channels of the first stage; the stages use w, 2w, 4w, 8w, 16w (32 = the released model).
        norm: "batch" (released), "instance", "group" or "none".
    """

    def __init__(self, width: int = 32, norm: str = "batch") -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")
        if width < 1:
            raise ValueError(f"width must be positive, got {width}")
        self.config: dict[str, Any] = {"width": int(width), "norm": norm}
        self.content_encoder = ContentEncoder(width, norm)
        self.style_encoder = StyleEncoder(width, norm)
        self.fusion = nn.Conv2d(32 * width, 16 * width, 3, padding=1)
        self.ups = nn.ModuleList(UpBlock(width * 2**i, norm) for i in (4, 3, 2, 1))
        self.to_rgb = nn.Conv2d(width, 3, 1)

    def style_code(self, x: Tensor) -> Tensor:
        """The appearance code of images (B, 3, H, W) in [-1, 1] -> (B, 16 * width)."""
        return self.style_encoder(x)

    def forward(self, content: Tensor, reference: Tensor) -> Tensor:
        """content (B, 3, H, W), reference (B, 3, H', W') in [-1, 1] -> content re-rendered, (B, 3, H, W)."""
        h, w = content.shape[-2:]
        x, (left, _, top, _) = pad_to_multiple(content)  # (B, 3, H16, W16)
        skips, bottleneck = self.content_encoder(x)  # bottleneck (B, 16w, H16/16, W16/16)
        code = self.style_code(reference)  # (B, 16w)
        tiled = code[:, :, None, None].expand(-1, -1, *bottleneck.shape[-2:])  # (B, 16w, h, w)
        x = self.fusion(torch.cat([bottleneck, tiled], dim=1))  # (B, 32w, ..) -> (B, 16w, ..)
        for up, skip in zip(self.ups, reversed(skips), strict=True):
            x = up(x, skip)  # channels halve, size doubles
        x = self.to_rgb(x)  # (B, 3, H16, W16)
        return x[..., top : top + h, left : left + w]


def ssh_full(norm: str = "batch") -> SSHNet:
    """The released architecture (width 32, about 15.2 M parameters)."""
    return SSHNet(width=32, norm=norm)


def ssh_small(norm: str = "batch") -> SSHNet:
    """Width 12 (about 2.1 M parameters): CPU demos and minutes-long training runs."""
    return SSHNet(width=12, norm=norm)


def ssh_tiny(norm: str = "batch") -> SSHNet:
    """Width 4 (about 0.24 M parameters): tests."""
    return SSHNet(width=4, norm=norm)


PRESETS: dict[str, Callable[[], SSHNet]] = {"full": ssh_full, "small": ssh_small, "tiny": ssh_tiny}
FAMILIES = ("ssh", "colour")  # SSHNet predicts pixels; ColourNet (ssh_model.colour_net) predicts a colour transform


def preset_name(family: str, preset: str) -> str:
    """The model name of ``preset`` in ``family``: "small" for SSH, "colour-small" for the colour family."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; expected one of {FAMILIES}")
    return preset if family == "ssh" else f"{family}-{preset}"


def all_presets() -> dict[str, Callable[[], nn.Module]]:
    """Every named model of every family: "full", "small", "tiny", "colour-small", ..."""
    from ssh_model import colour_net  # deferred: colour_net builds on this module (a cycle at import time)

    return {**PRESETS, **{f"colour-{name}": make for name, make in colour_net.PRESETS.items()}}


def build_model(preset_or_config: str | dict[str, Any]) -> nn.Module:
    """A fresh network from a preset name (see ``all_presets``) or a ``model.config`` dict.

    A config with ``"family": "colour"`` builds a ``ColourNet``; without one, an ``SSHNet``.
    """
    if isinstance(preset_or_config, str):
        presets = all_presets()
        if preset_or_config not in presets:
            raise ValueError(f"unknown preset {preset_or_config!r}; expected one of {sorted(presets)}")
        return presets[preset_or_config]()
    config = dict(preset_or_config)
    family = config.pop("family", "ssh")
    if family == "colour":
        from ssh_model.colour_net import ColourNet  # deferred: the same cycle as in all_presets

        allowed, make = {"width", "grid", "encoder_size", "hidden"}, ColourNet
    elif family == "ssh":
        allowed, make = {"width", "norm"}, SSHNet
    else:
        raise ValueError(f"unknown model family {family!r}; expected one of {FAMILIES}")
    unknown = set(config) - allowed
    if unknown:
        raise ValueError(f"unknown {make.__name__} config keys {sorted(unknown)}")
    return make(**config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def images_to_tensor(images: np.ndarray) -> Tensor:
    """uint8 (B, H, W, 3) or (H, W, 3) -> float32 (B, 3, H, W) in [-1, 1]."""
    if images.dtype != np.uint8:
        raise TypeError(f"expected uint8 images, got {images.dtype}")
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected (B, H, W, 3) or (H, W, 3) images, got shape {images.shape}")
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)  # (B, 3, H, W) uint8
    return x.float().div_(127.5).sub_(1.0).contiguous()


def tensor_to_images(x: Tensor) -> np.ndarray:
    """float (B, 3, H, W) in [-1, 1] -> uint8 (B, H, W, 3), clipped and rounded."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected a (B, 3, H, W) tensor, got shape {tuple(x.shape)}")
    x = ((x.detach().float().cpu() + 1.0) * 127.5).round_().clamp_(0, 255)
    return x.to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


__all__ = [
    "FAMILIES",
    "NORMS",
    "PRESETS",
    "SSHNet",
    "all_presets",
    "build_model",
    "count_parameters",
    "images_to_tensor",
    "make_norm",
    "pad_to_multiple",
    "preset_name",
    "ssh_full",
    "ssh_small",
    "ssh_tiny",
    "tensor_to_images",
]
