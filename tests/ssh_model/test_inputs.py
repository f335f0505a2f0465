"""Checks of in-memory harmonization inputs: soft masks of every type, alpha as the mask, reference masks;
every refusal is a typed error with its reason."""

import numpy as np
import pytest

from ssh_model.errors import HarmonizeInputError
from ssh_model.inputs import as_mask, check_composite, check_reference, composite_and_mask, split_alpha


def reason_of(call) -> str:
    with pytest.raises(HarmonizeInputError) as caught:
        call()
    return caught.value.reason


def test_as_mask_accepts_soft_masks_of_every_type_and_refuses_the_rest():
    assert np.array_equal(as_mask(np.array([[True, False]])), [[1.0, 0.0]])
    assert np.allclose(as_mask(np.array([[255, 0, 51]], np.uint8)), [[1.0, 0.0, 0.2]])
    assert np.allclose(as_mask(np.array([[65535, 0, 32768]], np.uint16)), [[1.0, 0.0, 0.5]], atol=1e-4)
    assert np.allclose(as_mask(np.array([[0.25, 0.75]], np.float64)), [[0.25, 0.75]])
    assert as_mask(np.zeros((3, 4, 1), np.float32)).shape == (3, 4)
    assert as_mask(np.array([[0, 128]], np.int64))[0, 1] == pytest.approx(128 / 255)
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        as_mask(np.zeros((3, 4, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        as_mask(np.array([[0.0, 2.0]]))
    with pytest.raises(ValueError, match="NaN"):
        as_mask(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match="ambiguous"):
        as_mask(np.array([[0, 1]], np.int64))
    with pytest.raises(ValueError, match="0-255"):
        as_mask(np.array([[0, 300]], np.int32))
    with pytest.raises(ValueError, match="4x3"):
        as_mask(np.zeros((3, 4), bool), shape=(3, 5))
    assert reason_of(lambda: as_mask(np.array([["a"]]))) == "bad_array"
    assert reason_of(lambda: as_mask(np.zeros((3, 4), bool), shape=(3, 5))) == "mask_size"


def test_given_an_rgba_composite_then_its_alpha_is_the_mask_unless_a_mask_is_given():
    # given: an RGBA cut-out (alpha 0 outside, a soft edge, 255 inside)
    rgb = np.full((4, 5, 3), 90, np.uint8)
    alpha = np.array([[0, 0, 128, 255, 255]] * 4, np.uint8)
    rgba = np.dstack([rgb, alpha])
    given = np.ones((4, 5), np.float32)

    # when / then
    image, mask = composite_and_mask(rgba, None)
    assert np.array_equal(image, rgb) and np.allclose(mask, alpha / 255.0)
    assert composite_and_mask(rgba, given)[1] is given
    assert split_alpha(rgb)[1] is None
    assert split_alpha(np.dstack([rgb, np.full((4, 5), 255, np.uint8)]))[1] is None  # opaque: no mask in it


@pytest.mark.parametrize(
    "composite", [np.zeros((4, 5, 3), np.uint8), np.zeros((4, 5, 4), np.uint8) + 255], ids=["rgb", "opaque-rgba"]
)
def test_given_no_mask_and_no_transparency_then_no_mask_names_the_composite(composite):
    with pytest.raises(HarmonizeInputError, match="shot.png has no transparency") as caught:
        composite_and_mask(composite, None, "composite shot.png")
    assert caught.value.reason == "no_mask"


def test_check_composite_reasons():
    composite = np.zeros((6, 8, 3), np.uint8)
    half = np.zeros((6, 8), np.float32)
    half[:, :4] = 1

    assert check_composite(composite, half).dtype == np.float32
    assert reason_of(lambda: check_composite(composite.astype(np.float32), half)) == "bad_array"
    assert reason_of(lambda: check_composite(composite, half[:5])) == "mask_size"
    assert reason_of(lambda: check_composite(composite, np.zeros((6, 8)))) == "empty_mask"
    assert reason_of(lambda: check_composite(composite, np.ones((6, 8)))) == "full_mask"
    assert check_composite(composite, np.ones((6, 8)), background=composite, allow_full=True).min() == 1
    assert reason_of(lambda: check_composite(composite, half, background=np.zeros((6, 8)))) == "bad_array"
    with pytest.raises(HarmonizeInputError, match="^mask m.png is empty"):
        check_composite(composite, np.zeros((6, 8)), names=("composite c.png", "mask m.png"))


def test_check_reference_reasons():
    region = np.zeros((6, 8), np.uint8)
    region[:2] = 255

    assert check_reference(region, (6, 8)).max() == 1.0
    assert reason_of(lambda: check_reference(region, (6, 9))) == "mask_size"
    assert reason_of(lambda: check_reference(np.zeros((6, 8), np.uint8), (6, 8))) == "empty_reference"
