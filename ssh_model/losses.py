"""The SSH training objective on dual-LUT triplets.

Two passes per triplet, run as ONE batched forward (the batch is concatenated, so each norm layer
sees both passes together and the network runs once):

    reconstruction  net(content_a, reference_a) ~ content_a    L_recon
    harmonization   net(content_a, reference_b) ~ content_b    L_harm

An optional style-code consistency term (our inference from the release, off by default) pulls
the style code of each output towards the (detached) code of its reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LOSS_KINDS = ("l1", "l2")


@dataclass(frozen=True)
class LossConfig:
    """Weights and form of the training losses.

    Args:
        recon: weight of L_recon (net(content_a, reference_a) vs content_a).
        harm: weight of L_harm (net(content_a, reference_b) vs content_b).
        style: weight of the style-code consistency term (0 = off, not computed).
        kind: "l1" (mean absolute error) or "l2" (mean squared error), on [-1, 1] pixels.
    """

    recon: float = 1.0
    harm: float = 1.0
    style: float = 0.0
    kind: str = "l1"

    def __post_init__(self) -> None:
        if self.kind not in LOSS_KINDS:
            raise ValueError(f"unknown loss kind {self.kind!r}; expected one of {LOSS_KINDS}")
        if min(self.recon, self.harm, self.style) < 0:
            raise ValueError("loss weights must be >= 0")


def distance(a: Tensor, b: Tensor, kind: str) -> Tensor:
    """Mean L1 or L2 distance (a scalar), computed in float32."""
    a, b = a.float(), b.float()
    return F.l1_loss(a, b) if kind == "l1" else F.mse_loss(a, b)


def ssh_forward(
    model: nn.Module,
    content_a: Tensor,
    reference_a: Tensor,
    reference_b: Tensor,
    content_b: Tensor,
    cfg: LossConfig | None = None,
) -> tuple[dict[str, Tensor], Tensor]:
    """Losses and the harmonization outputs of one batched forward.

    Args:
        model: an SSHNet (possibly DDP-wrapped).
        content_a, reference_a, reference_b, content_b: (B, 3, S, S) float in [-1, 1].
        cfg: loss weights and form (defaults: L1, recon and harm weighted 1).

    Returns:
        ({"total", "recon", "harm"[, "style"]} scalar tensors, net(content_a, reference_b) (B, 3, S, S)).
    """
    cfg = cfg or LossConfig()
    batch = content_a.shape[0]
    contents = torch.cat([content_a, content_a], dim=0)  # (2B, 3, S, S)
    references = torch.cat([reference_a, reference_b], dim=0)  # (2B, 3, S', S')
    outputs = model(contents, references)  # (2B, 3, S, S)
    recon_out, harm_out = outputs[:batch], outputs[batch:]
    losses = {
        "recon": distance(recon_out, content_a, cfg.kind),
        "harm": distance(harm_out, content_b, cfg.kind),
    }
    total = cfg.recon * losses["recon"] + cfg.harm * losses["harm"]
    if cfg.style > 0:
        net = getattr(model, "module", model)
        size = outputs.shape[-2:]
        refs = references
        if refs.shape[-2:] != size:  # the style encoder takes any size, but one batch needs one size
            refs = F.interpolate(refs, size=size, mode="area")
        codes = net.style_code(torch.cat([outputs, refs], dim=0))  # (4B, 16w)
        out_codes, ref_codes = codes[: 2 * batch], codes[2 * batch :]
        losses["style"] = distance(out_codes, ref_codes.detach(), cfg.kind)
        total = total + cfg.style * losses["style"]
    losses["total"] = total
    return losses, harm_out


def ssh_losses(
    model: nn.Module,
    content_a: Tensor,
    reference_a: Tensor,
    reference_b: Tensor,
    content_b: Tensor,
    cfg: LossConfig | None = None,
) -> dict[str, Tensor]:
    """The loss terms for a batch of triplets: keys total, recon, harm (and style when its weight > 0)."""
    return ssh_forward(model, content_a, reference_a, reference_b, content_b, cfg)[0]


__all__ = ["LOSS_KINDS", "LossConfig", "distance", "ssh_forward", "ssh_losses"]
