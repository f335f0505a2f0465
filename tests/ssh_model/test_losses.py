"""SSH losses: both passes in one batched forward, the right targets, weights and kinds."""

import numpy as np
import pytest
import torch
from torch import nn

from ssh_model.losses import LossConfig, ssh_forward, ssh_losses
from ssh_model.network import images_to_tensor, ssh_tiny


def random_triplet_tensors(seed: int, batch: int = 2, size: int = 32) -> list[torch.Tensor]:
    rng = np.random.default_rng(seed)
    return [images_to_tensor(rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)) for _ in range(4)]


class PickReference(nn.Module):
    """A stand-in network with a known answer: it returns the reference, and counts its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, content: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return reference


def test_both_passes_run_in_one_forward_with_the_right_targets():
    # given a network that outputs its reference, so the losses are known in closed form
    content_a, reference_a, reference_b, content_b = random_triplet_tensors(0)
    net = PickReference()
    # when the losses are computed
    losses = ssh_losses(net, content_a, reference_a, reference_b, content_b, LossConfig(kind="l1"))
    # then one forward served both passes: recon compares against content_a, harm against content_b
    assert net.calls == 1
    torch.testing.assert_close(losses["recon"], (reference_a - content_a).abs().mean())
    torch.testing.assert_close(losses["harm"], (reference_b - content_b).abs().mean())
    torch.testing.assert_close(losses["total"], losses["recon"] + losses["harm"])
    assert "style" not in losses


def test_weights_and_l2_kind():
    content_a, reference_a, reference_b, content_b = random_triplet_tensors(1)
    cfg = LossConfig(recon=0.5, harm=2.0, kind="l2")
    losses = ssh_losses(PickReference(), content_a, reference_a, reference_b, content_b, cfg)
    torch.testing.assert_close(losses["recon"], ((reference_a - content_a) ** 2).mean())
    torch.testing.assert_close(losses["total"], 0.5 * losses["recon"] + 2.0 * losses["harm"])


def test_a_perfect_network_scores_zero():
    # given a triplet where the pseudo-GT equals the reference (so PickReference is perfect on harm)
    content_a, reference_a, reference_b, _ = random_triplet_tensors(2)
    losses = ssh_losses(PickReference(), content_a, content_a, reference_b, reference_b)
    assert losses["total"].item() == 0.0


def test_style_term_is_added_and_back_propagates_into_the_network():
    # given the real network and a style weight
    torch.manual_seed(0)
    model = ssh_tiny()
    tensors = random_triplet_tensors(3, size=32)
    cfg = LossConfig(style=0.5)
    # when the losses are computed and back-propagated
    losses, harm_out = ssh_forward(model, *tensors, cfg)
    losses["total"].backward()
    # then the style term is part of the total and every parameter gets a gradient
    assert harm_out.shape == (2, 3, 32, 32)
    expected = losses["recon"] + losses["harm"] + 0.5 * losses["style"]
    torch.testing.assert_close(losses["total"], expected)
    assert losses["style"].item() > 0
    assert all(p.grad is not None for p in model.parameters())


def test_invalid_configs_are_rejected():
    with pytest.raises(ValueError, match="unknown loss kind"):
        LossConfig(kind="huber")
    with pytest.raises(ValueError, match=">= 0"):
        LossConfig(harm=-1.0)
