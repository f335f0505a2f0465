"""Full-resolution harmonization: geometry, blending, the colour fit and what the network gets to see."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ssh_model.colour import linear_to_srgb, srgb_to_linear
from ssh_model.errors import HarmonizeInputError
from ssh_model.images import encode_image
from ssh_model.inference import blend_region, harmonize, harmonize_details, harmonize_files
from ssh_model.network import ssh_tiny
from ssh_model.regions import background_reference, net_shape, push_pull_fill

GAINS = (1.12, 0.93, 0.78)  # the oracle's grade, per channel in linear light


class OracleModel(nn.Module):
    """Returns a known colour transform of its content (gains in linear light) and records its inputs."""

    def __init__(self, gains=GAINS) -> None:
        super().__init__()
        self.gains = nn.Parameter(torch.tensor(gains).view(1, 3, 1, 1), requires_grad=False)
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, content: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        self.calls.append((content.clone(), reference.clone()))
        srgb = (content + 1) / 2
        linear = torch.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
        graded = (linear * self.gains).clamp(0, 1)
        out = torch.where(graded <= 0.0031308, graded * 12.92, 1.055 * graded ** (1 / 2.4) - 0.055)
        return out * 2 - 1


def oracle_grade(image: np.ndarray) -> np.ndarray:
    """The oracle's transform applied exactly at full resolution: float 0-255."""
    return linear_to_srgb(np.clip(srgb_to_linear(image / 255.0) * np.array(GAINS), 0, 1)) * 255.0


def textured_photo(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    base = np.stack([40 + 150 * xx, 60 + 120 * yy, 180 - 100 * xx * yy], axis=2)
    return np.clip(base + rng.normal(0, 10, (height, width, 3)), 0, 230).astype(np.uint8)


def ellipse_mask(height: int, width: int, soft: float = 3.0) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    radius = np.hypot((yy - height * 0.45) / (height * 0.3), (xx - width * 0.55) / (width * 0.25))
    return np.clip((1 - radius) * min(height, width) * 0.3 / soft + 0.5, 0, 1).astype(np.float32)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(2)


@pytest.fixture(scope="module")
def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return ssh_tiny().eval()


def test_odd_size_shape_dtype_and_untouched_background(rng, tiny_model):
    # Given a 301 x 517 composite with a soft elliptical foreground and the real (tiny) network
    composite = textured_photo(rng, 301, 517)
    mask = ellipse_mask(301, 517)
    # When harmonized
    out = harmonize(composite, mask, tiny_model)
    # Then the output has the input's shape and type, and the background is bit-identical
    assert out.shape == (301, 517, 3) and out.dtype == np.uint8
    assert np.array_equal(out[mask == 0], composite[mask == 0])
    assert not np.array_equal(out[mask == 1], composite[mask == 1])


@pytest.mark.parametrize("shape", [(17, 900), (640, 23), (64, 64)])
def test_extreme_aspects_and_small_images(rng, tiny_model, shape):
    composite = textured_photo(rng, *shape)
    mask = np.zeros(shape, bool)
    mask[shape[0] // 4 : shape[0] // 2 + 1, shape[1] // 4 : shape[1] // 2 + 1] = True
    details = harmonize_details(composite, mask, tiny_model)
    assert details.image.shape == (*shape, 3)
    assert max(details.content.shape[:2]) == 256 and min(details.content.shape[:2]) >= 16
    assert max(details.reference.shape[:2]) == 256
    assert np.array_equal(details.image[~mask], composite[~mask])


def test_oracle_transform_is_reproduced_at_full_resolution(rng):
    # Given a model that applies a known grade to its content
    composite = textured_photo(rng, 360, 480)
    mask = ellipse_mask(360, 480)
    # When harmonized at full resolution (network at 256 px)
    out = harmonize(composite, mask, OracleModel())
    # Then the full-resolution foreground carries the same grade, within a few levels
    solid = mask == 1
    error = np.abs(out[solid].astype(float) - oracle_grade(composite[solid].astype(float)))
    assert error.mean() < 0.6 and error.max() <= 3.0, (error.mean(), error.max())
    # and soft edges are the blend of the graded and the original pixels
    edge = (mask > 0.2) & (mask < 0.8)
    alpha = mask[edge][:, None]
    expected = alpha * oracle_grade(composite[edge].astype(float)) + (1 - alpha) * composite[edge]
    assert np.abs(out[edge] - expected).max() <= 3.0


def test_soft_mask_blends_monotonically(rng):
    # Given a flat-coloured composite and a mask ramping 0 -> 1 from left to right
    composite = np.full((40, 300, 3), (150, 140, 130), np.uint8)
    ramp = np.tile(np.linspace(0.0, 1.0, 300, dtype=np.float32), (40, 1))
    ramp[:, :50] = 0.0
    out = harmonize(composite, ramp, OracleModel()).astype(int)
    # Then red rises and blue falls monotonically with the mask, from the composite to the full grade
    red, blue = out[20, :, 0], out[20, :, 2]
    assert (np.diff(red) >= 0).all() and (np.diff(blue) <= 0).all()
    assert red[0] == 150 and blue[0] == 130
    graded = oracle_grade(composite[:1, :1].astype(float))[0, 0]
    assert abs(red[-1] - graded[0]) <= 2 and abs(blue[-1] - graded[2]) <= 2


def test_blend_region_is_exact_at_the_ends():
    composite = np.arange(2 * 4 * 3, dtype=np.uint8).reshape(2, 4, 3) * 10
    recoloured = np.full((2, 4, 3), 255, np.uint8)
    weights = np.array([[0.0, 1.0, 0.5, 0.25], [1.0, 0.0, 0.001, 0.999]], np.float32)
    out = blend_region(composite, recoloured, weights, (0, 0, 4, 2))
    assert out[0, 0].tolist() == composite[0, 0].tolist() and out[1, 1].tolist() == composite[1, 1].tolist()
    assert out[0, 1].tolist() == [255] * 3 and out[1, 0].tolist() == [255] * 3
    assert np.abs(out[0, 2].astype(int) - (composite[0, 2] * 0.5 + 127.5)).max() <= 1
    assert np.array_equal(out[1, 2], composite[1, 2])  # 0.001 rounds to alpha 0


def test_input_errors(rng, tiny_model):
    composite = textured_photo(rng, 40, 50)
    mask = np.zeros((40, 50), bool)
    mask[10:20, 10:30] = True
    with pytest.raises(ValueError, match="50x39"):
        harmonize(composite, mask[:-1], tiny_model)
    with pytest.raises(ValueError, match="empty"):
        harmonize(composite, np.zeros((40, 50), bool), tiny_model)
    with pytest.raises(ValueError, match="whole image"):
        harmonize(composite, np.ones((40, 50), bool), tiny_model)
    with pytest.raises(ValueError, match="uint8"):
        harmonize(composite.astype(np.float32), mask, tiny_model)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        harmonize(composite, mask * 2.0, tiny_model)


def test_background_argument_is_the_reference(rng):
    # Given a separate, strongly blue background photo of another size
    composite = textured_photo(rng, 120, 160)
    mask = ellipse_mask(120, 160)
    blue = np.zeros((90, 300, 3), np.uint8)
    blue[..., 2] = rng.integers(150, 250, (90, 300))
    oracle = OracleModel()
    details = harmonize_details(composite, mask, oracle, background=blue)
    # Then the reference the network saw is that photo, downscaled (long side 256)
    reference = oracle.calls[-1][1]
    assert tuple(reference.shape) == (1, 3, 77, 256)
    assert details.reference[..., :2].max() == 0 and details.reference[..., 2].mean() > 150
    # and a full mask is allowed when a background is given
    full = harmonize(composite, np.ones((120, 160), bool), OracleModel(), background=blue)
    assert np.abs(full.astype(float) - oracle_grade(composite.astype(float))).max() <= 3.0


def test_foreground_never_reaches_the_reference(rng):
    # Given two composites that differ only where the mask is non-zero
    composite = textured_photo(rng, 200, 260)
    mask = ellipse_mask(200, 260)
    other = composite.copy()
    touched = mask > 0
    other[touched] = rng.integers(0, 256, (int(touched.sum()), 3), dtype=np.uint8)
    # When each is harmonized
    first, second = OracleModel(), OracleModel()
    harmonize(composite, mask, first)
    harmonize(other, mask, second)
    # Then the network saw exactly the same reference, while the contents differ
    assert torch.equal(first.calls[-1][1], second.calls[-1][1])
    assert not torch.equal(first.calls[-1][0], second.calls[-1][0])


def test_reference_is_a_filled_picture_of_the_background(rng):
    # Given a composite whose background is green and foreground red
    composite = np.zeros((100, 140, 3), np.uint8)
    composite[..., 1] = 200
    mask = ellipse_mask(100, 140)
    composite[mask > 0] = (255, 0, 0)
    reference = background_reference(composite, mask, size=64)
    # Then the reference is all background green: no trace of red, no hole
    assert reference.shape == (46, 64, 3)
    assert reference[..., 0].max() == 0 and reference[..., 1].min() == 200


def test_push_pull_fill_keeps_known_pixels_and_interpolates(rng):
    image = rng.integers(0, 256, (33, 47, 3), dtype=np.uint8)
    known = np.ones((33, 47), bool)
    known[5:25, 10:40] = False
    image[~known] = 0
    filled = push_pull_fill(image, known)
    assert np.array_equal(filled[known], image[known])
    low, high = image[known].min(axis=0), image[known].max(axis=0)
    assert (filled[~known] >= low).all() and (filled[~known] <= high).all()
    # a left/right split known background fills the hole with a smooth left-to-right transition
    two = np.zeros((20, 40, 3), np.uint8)
    two[:, :20] = 50
    two[:, 20:] = 150
    hole = np.ones((20, 40), bool)
    hole[5:15, 10:30] = False
    fill = push_pull_fill(two, hole)[10, 10:30, 0].astype(int)
    assert fill[0] < fill[-1] and (np.diff(fill) >= -2).all()
    with pytest.raises(ValueError):
        push_pull_fill(image, np.zeros((33, 47), bool))


def test_model_mode_and_device_are_respected(rng):
    torch.manual_seed(1)
    model = ssh_tiny()
    model.train()
    composite = textured_photo(rng, 64, 80)
    mask = ellipse_mask(64, 80)
    first = harmonize(composite, mask, model)
    # the training flag is restored, and eval mode made the result independent of batch statistics
    assert model.training
    model.eval()
    assert np.array_equal(first, harmonize(composite, mask, model))


def test_net_shape_keeps_aspect():
    assert net_shape(4000, 3000, 256) == (256, 192)
    assert net_shape(100, 3000, 256) == (16, 256)
    assert net_shape(50, 50, 256) == (256, 256)


def test_harmonize_files_reads_rgba_and_grey_masks(tmp_path, rng):
    composite = textured_photo(rng, 90, 120)
    mask = (ellipse_mask(90, 120) * 255).astype(np.uint8)
    rgba = np.concatenate([composite, np.full((90, 120, 1), 255, np.uint8)], axis=2)
    (tmp_path / "c.png").write_bytes(encode_image(rgba[..., :3]))
    from PIL import Image

    Image.fromarray(rgba).save(tmp_path / "c_rgba.png")
    (tmp_path / "m.png").write_bytes(encode_image(mask))
    (tmp_path / "small.png").write_bytes(encode_image(mask[:-1]))
    out = harmonize_files(str(tmp_path / "c_rgba.png"), str(tmp_path / "m.png"), OracleModel())
    assert np.array_equal(out, harmonize(composite, mask, OracleModel()))
    with pytest.raises(ValueError, match="small.png"):
        harmonize_files(str(tmp_path / "c.png"), str(tmp_path / "small.png"), OracleModel())
    background_url = str(tmp_path / "c.png")
    with_background = harmonize_files(
        str(tmp_path / "c.png"), str(tmp_path / "m.png"), OracleModel(), background_url=background_url
    )
    assert with_background.shape == (90, 120, 3)


def test_the_device_path_agrees_with_the_cpu_path(rng, tiny_model):
    # Given a composite with a soft foreground (the GPU path is the torch one, run here on the CPU)
    composite = textured_photo(rng, 157, 203)
    mask = ellipse_mask(157, 203)
    # When harmonized with Pillow's LUT and uint16 blend, and with torch's grid_sample and float blend
    pillow = harmonize_details(composite, mask, tiny_model, lut_backend="pillow").image
    on_device = harmonize_details(composite, mask, tiny_model, lut_backend="torch").image
    # Then they agree within one level, and the background is untouched by both
    assert np.abs(pillow.astype(int) - on_device.astype(int)).max() <= 1
    assert np.array_equal(on_device[mask == 0], composite[mask == 0])
    assert not np.array_equal(on_device[mask == 1], composite[mask == 1])
    with pytest.raises(ValueError, match="lut_backend"):
        harmonize_details(composite, mask, tiny_model, lut_backend="cuda")


def test_given_the_module_imported_first_when_harmonize_is_imported_from_the_package_then_it_is_the_function():
    import importlib

    inference = importlib.import_module("ssh_model.inference")
    from ssh_model import harmonize, load_pretrained

    assert harmonize is inference.harmonize and callable(load_pretrained)


# --- the inputs users bring: soft masks, alpha as the mask, a reference region, the default model --------------


def feathered_mask(height: int, width: int) -> np.ndarray:
    """float32 (H, W): 1 in the middle columns, 0 at the sides, linear ramps 20 px wide between."""
    ramp = np.clip(np.minimum(np.arange(width) - 20, width - 21 - np.arange(width)) / 20.0, 0.0, 1.0)
    mask = np.tile(ramp.astype(np.float32), (height, 1))
    mask[: height // 4] = 0
    return mask


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_given_a_feathered_mask_of_any_depth_then_the_result_is_blended_by_it_without_a_hard_edge(rng, dtype):
    # given: a composite and a mask with 20-pixel linear ramps, as 8-bit, 16-bit or float
    composite = textured_photo(rng, 80, 140)
    soft = feathered_mask(80, 140)
    scale = {"uint8": 255, "uint16": 65535, "float32": 1}[dtype]
    mask = np.rint(soft * scale).astype(dtype) if dtype != "float32" else soft

    # when
    out = harmonize(composite, mask, OracleModel()).astype(float)

    # then: every pixel is a * graded + (1 - a) * composite (the oracle's grade, known exactly)
    expected = soft[..., None] * oracle_grade(composite) + (1 - soft[..., None]) * composite
    assert np.abs(out - expected).max() <= 3.0
    change = np.abs(out - composite).mean(axis=2)[40]  # along one row across both ramps
    assert np.abs(np.diff(change)).max() < 0.25 * change.max()  # no step: the change grows over the ramp


def test_given_an_rgba_composite_without_a_mask_then_its_alpha_is_the_mask(rng, tmp_path):
    # given: an RGBA composite whose alpha is a soft ellipse, and the same as RGB + mask
    composite = textured_photo(rng, 90, 120)
    alpha = (ellipse_mask(90, 120) * 255).astype(np.uint8)
    rgba = np.dstack([composite, alpha])
    (tmp_path / "cut.png").write_bytes(encode_image(composite))
    from PIL import Image

    Image.fromarray(rgba).save(tmp_path / "cut.png")
    (tmp_path / "opaque.png").write_bytes(encode_image(composite))

    # when
    from_array = harmonize(rgba, model=OracleModel())
    from_file = harmonize_files(str(tmp_path / "cut.png"), model=OracleModel())

    # then
    assert np.array_equal(from_array, harmonize(composite, alpha, OracleModel()))
    assert np.array_equal(from_file, from_array)
    with pytest.raises(HarmonizeInputError, match="opaque.png has no transparency") as caught:
        harmonize_files(str(tmp_path / "opaque.png"), model=OracleModel())
    assert caught.value.reason == "no_mask"


def two_tone_scene(height: int = 96, width: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """A composite whose background is warm on the left and cool on the right, a grey square in the middle."""
    scene = np.zeros((height, width, 3), np.uint8)
    scene[:, : width // 2] = (200, 120, 60)
    scene[:, width // 2 :] = (50, 110, 210)
    mask = np.zeros((height, width), np.float32)
    mask[30:66, 65:95] = 1
    scene[mask > 0] = 128
    return scene, mask


@pytest.mark.parametrize("side", ["left", "right"])
def test_given_a_reference_mask_then_the_network_sees_only_that_region(side):
    # given: a warm-left / cool-right background and a reference mask over one side (it overlaps the foreground)
    composite, mask = two_tone_scene()
    region = np.zeros(mask.shape, np.uint8)
    if side == "left":
        region[:, :80] = 255  # the foreground covers columns 65-94
    else:
        region[:, 80:] = 255

    # when
    details = harmonize_details(composite, mask, OracleModel(), reference_mask=region)

    # then: the reference is that side's colour only, the foreground's grey included nowhere
    colour = composite[5, 5] if side == "left" else composite[5, -5]
    assert np.abs(details.reference.reshape(-1, 3).astype(int) - colour).max() <= 2
    whole = harmonize_details(composite, mask, OracleModel()).reference
    assert np.abs(whole.reshape(-1, 3).astype(int) - colour).max() > 50  # without it, both sides are seen


def test_given_a_background_photo_then_the_reference_mask_is_of_its_size(rng):
    composite, mask = two_tone_scene()
    background = np.zeros((40, 50, 3), np.uint8)
    background[:, :25] = (10, 200, 10)
    region = np.zeros((40, 50), bool)
    region[:, :25] = True

    reference = harmonize_details(composite, mask, OracleModel(), background, reference_mask=region).reference

    assert np.abs(reference.reshape(-1, 3).astype(int) - (10, 200, 10)).max() <= 2
    with pytest.raises(HarmonizeInputError) as caught:
        harmonize(composite, mask, OracleModel(), background, reference_mask=np.ones(mask.shape, bool))
    assert caught.value.reason == "mask_size"


def test_given_a_reference_mask_inside_the_foreground_only_then_empty_reference():
    composite, mask = two_tone_scene()

    with pytest.raises(HarmonizeInputError, match="no background pixel") as caught:
        harmonize(composite, mask, OracleModel(), reference_mask=mask > 0)

    assert caught.value.reason == "empty_reference"


def test_given_no_model_then_the_shipped_model_harmonizes(rng):
    from ssh_model.pretrained import load_pretrained

    composite = textured_photo(rng, 64, 96)
    mask = ellipse_mask(64, 96)

    assert np.array_equal(harmonize(composite, mask), harmonize(composite, mask, load_pretrained()))
