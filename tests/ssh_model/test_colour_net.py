"""ColourNet: identity at start, exact transforms, tiles that agree, files that round-trip, and it learns."""

import numpy as np
import pytest
import torch

from ssh_model.checkpoints import load_model, save_model
from ssh_model.colour_net import (
    NUM_TERMS,
    ColourNet,
    apply_transform,
    identity_coefficients,
    linear_to_srgb,
    root_polynomial_features,
    srgb_to_linear,
)
from ssh_model.inference import harmonize_details, recolour_with_transform
from ssh_model.losses import LossConfig, ssh_losses
from ssh_model.network import build_model, preset_name


def coefficients_of(matrix: np.ndarray, offset=(0.0, 0.0, 0.0)) -> torch.Tensor:
    """(1, 42, 1, 1) coefficients of ``linear_out = matrix @ linear_in + offset``."""
    table = identity_coefficients().clone()
    table[:3] = torch.as_tensor(matrix, dtype=torch.float32).T
    table[-1] = torch.as_tensor(offset, dtype=torch.float32)
    return table.reshape(1, NUM_TERMS * 3, 1, 1)


@pytest.mark.parametrize("preset", ["small", "grid-small", "tiny"])
def test_given_a_fresh_colour_net_when_run_then_it_returns_the_content(preset):
    # given
    model = build_model(preset_name("colour", preset)).eval()
    content = torch.rand(2, 3, 40, 56) * 2 - 1
    reference = torch.rand(2, 3, 32, 32) * 2 - 1
    # when
    with torch.no_grad():
        out = model(content, reference)
    # then
    assert out.shape == content.shape
    assert torch.allclose(out, content, atol=1e-5)


def test_given_linear_rgb_when_exposure_doubles_then_every_root_term_but_the_constant_doubles():
    # given
    linear = torch.rand(1, 3, 8, 8) * 0.4
    # when
    once, twice = root_polynomial_features(linear), root_polynomial_features(2 * linear)
    # then
    assert torch.allclose(twice[:, :-1], 2 * once[:, :-1], atol=1e-6)
    assert torch.equal(twice[:, -1], once[:, -1])


def test_given_a_channel_swap_when_applied_then_the_channels_swap_in_srgb():
    # given
    image = torch.rand(1, 3, 16, 16)
    swap = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], dtype=np.float32)  # r <-> b
    # when
    out = apply_transform(image, coefficients_of(swap))
    # then
    assert torch.allclose(out, image[:, [2, 1, 0]], atol=1e-5)


def test_given_srgb_values_when_round_tripped_through_linear_then_they_come_back():
    values = torch.linspace(0, 1, 101)
    assert torch.allclose(linear_to_srgb(srgb_to_linear(values)), values, atol=1e-5)


def test_given_a_grid_of_transforms_when_applied_in_tiles_then_the_tiles_match_the_whole():
    # given: a 2x2 grid whose cells brighten by different amounts
    coefficients = identity_coefficients().reshape(1, NUM_TERMS * 3, 1, 1).repeat(1, 1, 2, 2)
    gains = torch.tensor([[0.6, 1.0], [1.3, 0.9]])
    coefficients[:, :9] *= gains.repeat(9, 1, 1)[None]  # the linear part (r, g, b rows) of every cell
    image = torch.rand(1, 3, 24, 30)
    # when
    whole = apply_transform(image, coefficients)
    top = apply_transform(image[..., :10, :], coefficients, (0.0, 0.0, 1.0, 10 / 24))
    bottom = apply_transform(image[..., 10:, :], coefficients, (0.0, 10 / 24, 1.0, 1.0))
    # then
    assert torch.allclose(torch.cat([top, bottom], dim=-2), whole, atol=1e-6)
    assert not torch.allclose(whole, apply_transform(image, coefficients.mean(dim=(2, 3), keepdim=True)), atol=1e-3)


def test_given_a_predicted_gain_when_harmonizing_then_only_the_foreground_changes_by_that_gain():
    # given: a composite, a soft-edged mask and a transform halving the linear light
    rng = np.random.default_rng(3)
    composite = rng.integers(40, 220, (120, 160, 3), dtype=np.uint8)
    weights = np.zeros((120, 160), np.float32)
    weights[30:90, 40:120] = 1.0
    weights[30:90, 40] = 0.5
    coefficients = coefficients_of(np.eye(3) * 0.5)
    box, content_box = (40, 30, 120, 90), (32, 24, 128, 96)
    # when: in one tile and in tiles of a few rows
    whole = recolour_with_transform(composite, weights, coefficients, box, content_box)
    tiled = recolour_with_transform(composite, weights, coefficients, box, content_box, tile_pixels=300)
    # then
    assert np.array_equal(whole, tiled)
    outside = weights == 0
    assert np.array_equal(whole[outside], composite[outside])
    expected = linear_to_srgb(srgb_to_linear(torch.from_numpy(composite[40:80, 60:100] / 255.0)) * 0.5) * 255
    assert np.abs(whole[40:80, 60:100].astype(float) - expected.numpy()).max() <= 1.0


def test_given_a_colour_net_when_harmonizing_a_composite_then_the_transform_is_its_prediction():
    # given
    torch.manual_seed(0)
    model = ColourNet(width=4, grid=2, hidden=16).eval()
    torch.nn.init.normal_(model.head[-1].weight, std=0.05)  # not the identity any more
    rng = np.random.default_rng(1)
    composite = rng.integers(0, 255, (90, 130, 3), dtype=np.uint8)
    mask = np.zeros((90, 130), np.uint8)
    mask[20:70, 30:100] = 255
    # when
    result = harmonize_details(composite, mask, model)
    # then
    assert result.transform.shape == (NUM_TERMS * 3, 2, 2)
    assert np.array_equal(result.image[mask == 0], composite[mask == 0])
    assert not np.array_equal(result.image[mask > 0], composite[mask > 0])


def test_given_a_saved_colour_net_when_loaded_then_config_and_outputs_match(tmp_path):
    # given
    model = ColourNet(width=4, grid=3, encoder_size=32, hidden=8)
    torch.nn.init.normal_(model.head[-1].weight, std=0.05)
    path = str(tmp_path / "colour.safetensors")
    # when
    save_model(model, path)
    loaded = load_model(path)
    # then
    assert isinstance(loaded, ColourNet)
    assert loaded.config == model.config
    content, reference = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(loaded(content, reference), model.eval()(content, reference), atol=1e-6)


def test_given_bad_configs_when_building_then_the_error_names_the_problem():
    with pytest.raises(ValueError, match="unknown ColourNet config keys"):
        build_model({"family": "colour", "norm": "batch"})
    with pytest.raises(ValueError, match="unknown model family"):
        build_model({"family": "lut"})
    with pytest.raises(ValueError, match="unknown model family"):
        preset_name("lut", "small")


def test_given_graded_pairs_when_trained_briefly_then_the_harmonization_loss_falls():
    # given: contents and references whose colours differ by a fixed per-channel gain
    torch.manual_seed(0)
    model = ColourNet(width=4, grid=1, encoder_size=32, hidden=32)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    base = torch.rand(8, 3, 32, 32)
    graded = (base * torch.tensor([1.0, 0.7, 0.5])[None, :, None, None]).clamp(0, 1)
    content_a, content_b = base * 2 - 1, graded * 2 - 1
    reference_a, reference_b = content_a.flip(-1), content_b.flip(-1)
    cfg = LossConfig()
    with torch.no_grad():
        before = ssh_losses(model, content_a, reference_a, reference_b, content_b, cfg)["harm"].item()
    # when
    for _ in range(60):
        optimizer.zero_grad()
        ssh_losses(model, content_a, reference_a, reference_b, content_b, cfg)["total"].backward()
        optimizer.step()
    # then
    with torch.no_grad():
        after = ssh_losses(model, content_a, reference_a, reference_b, content_b, cfg)["harm"].item()
    assert after < 0.5 * before, (before, after)
