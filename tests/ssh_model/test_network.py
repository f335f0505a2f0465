"""SSHNet: shapes for every preset, the released parameter count, style codes, determinism, helpers."""

import numpy as np
import pytest
import torch

from ssh_model.network import (
    NORMS,
    PRESETS,
    SSHNet,
    build_model,
    count_parameters,
    images_to_tensor,
    pad_to_multiple,
    ssh_full,
    ssh_tiny,
    tensor_to_images,
)


def random_images(rng: np.random.Generator, batch: int, height: int, width: int) -> torch.Tensor:
    """float (B, 3, H, W) in [-1, 1] from random uint8 pixels."""
    return images_to_tensor(rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_keeps_the_content_size_for_odd_sizes(preset):
    # given a preset network and a content of a size that is not a multiple of 16
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    model = build_model(preset).eval()
    content, reference = random_images(rng, 2, 70, 45), random_images(rng, 2, 33, 50)
    # when it harmonizes
    with torch.no_grad():
        out = model(content, reference)
    # then the output has the content's size, is finite and responds to the input
    assert out.shape == (2, 3, 70, 45)
    assert torch.isfinite(out).all()
    assert out.std() > 0


def test_full_preset_matches_the_released_parameter_count():
    # given the released architecture
    model = ssh_full()
    # then its size matches the released 15,193,315 parameters (within 2%; it is exact today)
    count = count_parameters(model)
    assert abs(count - 15_193_315) / 15_193_315 < 0.02
    assert count == 15_193_315


@pytest.mark.parametrize("norm", NORMS)
def test_every_norm_builds_and_trains_one_step(norm):
    # given a tiny network with each norm
    torch.manual_seed(0)
    model = SSHNet(width=4, norm=norm)
    rng = np.random.default_rng(2)
    content, reference = random_images(rng, 2, 32, 32), random_images(rng, 2, 32, 32)
    # when a loss is back-propagated
    model(content, reference).abs().mean().backward()
    # then every parameter gets a finite gradient
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.config == {"width": 4, "norm": norm}


def test_unknown_norm_and_preset_are_rejected():
    with pytest.raises(ValueError, match="unknown norm"):
        SSHNet(width=4, norm="layer")
    with pytest.raises(ValueError, match="unknown preset"):
        build_model("huge")
    with pytest.raises(ValueError, match="unknown SSHNet config keys"):
        build_model({"width": 4, "depth": 3})


def test_style_code_has_sixteen_times_the_width():
    # given a tiny network and references of two different sizes
    model = ssh_tiny().eval()
    rng = np.random.default_rng(3)
    # when it encodes them
    with torch.no_grad():
        small = model.style_code(random_images(rng, 3, 40, 40))
        large = model.style_code(random_images(rng, 3, 96, 64))
    # then each image gets a (16 * width)-d code
    assert small.shape == large.shape == (3, 64)
    assert not torch.allclose(small, large)


def test_eval_mode_is_deterministic():
    # given a network in eval mode
    torch.manual_seed(0)
    model = build_model({"width": 4, "norm": "batch"}).eval()
    rng = np.random.default_rng(4)
    content, reference = random_images(rng, 1, 48, 48), random_images(rng, 1, 48, 48)
    with torch.no_grad():
        first, second = model(content, reference), model(content, reference)
    # then the same inputs give bit-identical outputs
    assert torch.equal(first, second)


def test_the_reference_changes_the_output():
    # given one content paired with a dark and a bright reference, in one training-mode batch
    torch.manual_seed(0)
    model = ssh_tiny().train()
    rng = np.random.default_rng(8)
    content = random_images(rng, 1, 48, 48).expand(2, -1, -1, -1)
    dark = torch.from_numpy(rng.uniform(-0.9, -0.4, (1, 3, 48, 48))).float()
    bright = torch.from_numpy(rng.uniform(0.4, 0.9, (1, 3, 48, 48))).float()
    # when it harmonizes both
    with torch.no_grad():
        out = model(content, torch.cat([dark, bright]))
    # then the two outputs differ (the reference code reaches the decoder)
    assert (out[0] - out[1]).abs().max() > 1e-3


def test_channels_last_gives_the_same_output():
    # given a network and inputs in the channels_last memory format
    torch.manual_seed(0)
    model = ssh_tiny().eval()
    rng = np.random.default_rng(5)
    content, reference = random_images(rng, 2, 64, 48), random_images(rng, 2, 64, 48)
    with torch.no_grad():
        expected = model(content, reference)
        model = model.to(memory_format=torch.channels_last)
        last = torch.channels_last
        out = model(content.to(memory_format=last), reference.to(memory_format=last))
    # then the result agrees with the contiguous run
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)


def test_padding_reflects_and_falls_back_to_replicate_for_tiny_images():
    rng = np.random.default_rng(6)
    x = random_images(rng, 1, 20, 17)
    padded, (left, right, top, bottom) = pad_to_multiple(x)
    assert padded.shape[-2:] == (32, 32)
    assert torch.equal(padded[..., top : top + 20, left : left + 17], x)
    tiny, _ = pad_to_multiple(random_images(rng, 1, 3, 5))
    assert tiny.shape[-2:] == (16, 16)


def test_image_tensor_helpers_round_trip():
    # given uint8 images
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, (2, 9, 11, 3), dtype=np.uint8)
    # when converted to the network's range and back
    tensor = images_to_tensor(images)
    # then the range is [-1, 1], the layout (B, 3, H, W), and the pixels survive exactly
    assert tensor.shape == (2, 3, 9, 11) and tensor.dtype == torch.float32
    assert tensor.min() >= -1 and tensor.max() <= 1
    np.testing.assert_array_equal(tensor_to_images(tensor), images)
    assert images_to_tensor(images[0]).shape == (1, 3, 9, 11)
    assert tensor_to_images(torch.full((1, 3, 2, 2), 5.0)).max() == 255
    with pytest.raises(TypeError):
        images_to_tensor(images.astype(np.float32))
