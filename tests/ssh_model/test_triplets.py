import numpy as np
import pytest
from PIL import Image

from ssh_model.lut import LUT, apply_lut, identity_lut, random_lut
from ssh_model.triplets import (
    MIN_OVERLAP,
    SCALE_RANGE,
    Triplet,
    box_overlap,
    crop_resize,
    draw_luts,
    make_triplet,
    sample_boxes,
)

IMAGE_KEYS = ("content_a", "reference_a", "reference_b", "content_b")


def photo(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth random colour photo, uint8 (H, W, 3)."""
    small = rng.integers(0, 256, size=(max(2, height // 12), max(2, width // 12), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC))


@pytest.fixture(scope="module")
def luts() -> tuple[LUT, LUT]:
    return random_lut(1, size=17), random_lut(2, size=17)


def check_box(box, width: int, height: int, crop_size: int) -> None:
    x0, y0, x1, y1 = box
    assert all(isinstance(v, int) for v in box)
    assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height, box
    side = x1 - x0
    assert side == y1 - y0, box  # square
    short = min(width, height)
    assert min(short, max(int(SCALE_RANGE[0] * short) - 1, crop_size // 2)) <= side <= short, box


def test_given_a_photo_and_two_luts_then_each_image_is_its_lut_applied_to_its_crop(luts):
    image = photo(np.random.default_rng(0), 120, 160)
    lut_a, lut_b = luts
    triplet = make_triplet(image, lut_a, lut_b, np.random.default_rng(1), crop_size=48)
    assert isinstance(triplet, Triplet) and (triplet.lut_a, triplet.lut_b) == ("gen-1", "gen-2")
    for key in IMAGE_KEYS:
        value = getattr(triplet, key)
        assert value.shape == (48, 48, 3) and value.dtype == np.uint8 and value.flags.c_contiguous
    content = crop_resize(image, triplet.content_box, 48, triplet.content_flip)
    reference = crop_resize(image, triplet.reference_box, 48, triplet.reference_flip)
    np.testing.assert_array_equal(triplet.content_a, apply_lut(content, lut_a))
    np.testing.assert_array_equal(triplet.reference_a, apply_lut(reference, lut_a))
    np.testing.assert_array_equal(triplet.reference_b, apply_lut(reference, lut_b))
    np.testing.assert_array_equal(triplet.content_b, apply_lut(content, lut_b))  # the pseudo ground truth
    assert np.abs(triplet.content_a.astype(int) - triplet.content_b).mean() > 2.0  # two different grades
    check_box(triplet.content_box, 160, 120, 48)
    check_box(triplet.reference_box, 160, 120, 48)
    assert box_overlap(triplet.content_box, triplet.reference_box) >= MIN_OVERLAP


def test_the_same_generator_state_gives_the_same_triplet_and_other_seeds_differ(luts):
    image = photo(np.random.default_rng(1), 100, 140)
    first = make_triplet(image, *luts, np.random.default_rng(7), crop_size=32)
    again = make_triplet(image, *luts, np.random.default_rng(7), crop_size=32)
    for key in IMAGE_KEYS:
        np.testing.assert_array_equal(getattr(first, key), getattr(again, key))
    assert (first.content_box, first.reference_box, first.content_flip, first.reference_flip) == (
        again.content_box,
        again.reference_box,
        again.content_flip,
        again.reference_flip,
    )
    others = [make_triplet(image, *luts, np.random.default_rng(seed), crop_size=32) for seed in range(8)]
    assert len({(t.content_box, t.reference_box) for t in others}) >= 6
    assert any(not np.array_equal(t.content_a, first.content_a) for t in others)


@pytest.mark.parametrize(("width", "height"), [(160, 120), (120, 160), (600, 90), (64, 64), (33, 300)])
def test_sampled_boxes_are_square_inside_the_photo_and_overlap_enough(width, height):
    rng = np.random.default_rng(width * height)
    sides = []
    for _ in range(300):
        content, reference = sample_boxes(rng, width, height, crop_size=64)
        check_box(content, width, height, 64)
        check_box(reference, width, height, 64)
        assert box_overlap(content, reference) >= MIN_OVERLAP, (content, reference)
        sides.append(content[2] - content[0])
    if min(width, height) >= 128:  # crop sides spread over the scale range
        assert max(sides) - min(sides) >= 0.3 * min(width, height)


def test_flips_happen_about_half_of_the_time_and_mirror_the_crop(luts):
    image = photo(np.random.default_rng(2), 72, 96)
    rng = np.random.default_rng(3)
    flips = [make_triplet(image, *luts, rng, crop_size=36) for _ in range(60)]
    share = np.mean([t.content_flip for t in flips] + [t.reference_flip for t in flips])
    assert 0.3 < share < 0.7
    box = (10, 5, 46, 41)  # 36 px: no resampling
    np.testing.assert_array_equal(crop_resize(image, box, 36, flip=False), image[5:41, 10:46])
    np.testing.assert_array_equal(crop_resize(image, box, 36, flip=True), image[5:41, 10:46][:, ::-1])


def test_crop_resize_resizes_any_box_and_rejects_boxes_outside_the_image():
    image = photo(np.random.default_rng(4), 80, 100)
    out = crop_resize(image, (0, 0, 100, 80), 16, flip=False)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    expected = np.asarray(Image.fromarray(image).resize((16, 16), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(out, expected)
    assert crop_resize(image, (0, 0, 20, 20), 40, flip=False).shape == (40, 40, 3)  # upscaling works too
    for bad in ((0, 0, 101, 80), (-1, 0, 10, 10), (10, 10, 10, 20), (5, 30, 20, 20)):
        with pytest.raises(ValueError, match="outside"):
            crop_resize(image, bad, 16, flip=False)


def test_the_two_luts_must_differ(luts):
    image = photo(np.random.default_rng(5), 64, 64)
    lut_a, _ = luts
    renamed_copy = LUT(lut_a.table, name="another-name")
    same_name = LUT(random_lut(9, size=5).table, name=lut_a.name)
    for first, second in ((lut_a, lut_a), (lut_a, same_name), (lut_a, renamed_copy), (LUT(lut_a.table), LUT(lut_a.table))):
        with pytest.raises(ValueError, match="two different LUTs"):
            make_triplet(image, first, second, np.random.default_rng(0), crop_size=32)
    other = LUT(random_lut(9, size=5).table, name="other")
    assert make_triplet(image, lut_a, other, np.random.default_rng(0), crop_size=32).lut_b == "other"


def test_a_photo_below_half_the_crop_size_is_rejected_and_a_small_one_is_upscaled(luts):
    with pytest.raises(ValueError, match="60x40 px is too small for 96 px crops"):
        make_triplet(photo(np.random.default_rng(6), 40, 60), *luts, np.random.default_rng(0), crop_size=96)
    small = photo(np.random.default_rng(7), 50, 70)  # short side 50 >= 96 // 2: crops upscaled
    triplet = make_triplet(small, *luts, np.random.default_rng(0), crop_size=96)
    assert triplet.content_a.shape == (96, 96, 3)
    assert 48 <= triplet.content_box[2] - triplet.content_box[0] <= 50  # upscaled at most 2x
    with pytest.raises(ValueError, match="uint8"):
        make_triplet(small.astype(np.float32), *luts, np.random.default_rng(0), crop_size=32)


def test_given_the_region_layout_then_content_b_is_content_a_regraded_and_the_views_come_from_one_scene(luts):
    image = photo(np.random.default_rng(4), 150, 200)
    lut_a, lut_b = luts
    triplet = make_triplet(image, lut_a, lut_b, np.random.default_rng(5), crop_size=48, layout="region")
    assert triplet.layout == "region"
    for key in IMAGE_KEYS:
        assert getattr(triplet, key).shape == (48, 48, 3)
    # Both LUTs grade the same two views: the same content and reference under one grade or the other.
    identity = identity_lut(17)
    plain = make_triplet(image, identity, lut_b, np.random.default_rng(5), crop_size=48, layout="region")
    np.testing.assert_array_equal(triplet.content_a, apply_lut(plain.content_a, lut_a))
    np.testing.assert_array_equal(triplet.content_b, apply_lut(plain.content_a, lut_b))
    np.testing.assert_array_equal(triplet.reference_a, apply_lut(plain.reference_a, lut_a))
    np.testing.assert_array_equal(triplet.reference_b, apply_lut(plain.reference_a, lut_b))
    # The reference box is the scene (square, inside the photo); the content box lies within it.
    check_box(triplet.reference_box, 200, 150, 48)
    cx0, cy0, cx1, cy1 = triplet.content_box
    sx0, sy0, sx1, sy1 = triplet.reference_box
    assert sx0 <= cx0 < cx1 <= sx1 and sy0 <= cy0 < cy1 <= sy1
    assert (cx1 - cx0) * (cy1 - cy0) < (sx1 - sx0) * (sy1 - sy0)

    # The content view shows the photo's pixels of the content box, mirrored as recorded (its margin
    # outside the blob is refilled, so only part of it matches).
    def matching(flip: bool) -> float:
        source = crop_resize(image, triplet.content_box, 48, flip)
        return float((np.abs(plain.content_a.astype(int) - source).max(axis=2) <= 3).mean())

    assert matching(triplet.content_flip) > 0.04 and matching(not triplet.content_flip) < 0.01


def test_an_unknown_layout_is_refused(luts):
    with pytest.raises(ValueError, match="unknown triplet layout 'blobs'"):
        make_triplet(photo(np.random.default_rng(0), 64, 64), *luts, np.random.default_rng(0), crop_size=32, layout="blobs")


def test_given_no_natural_fraction_when_luts_are_drawn_then_two_bank_grades_and_the_old_random_stream():
    bank = [random_lut(seed, size=9) for seed in range(5)]
    first, second = draw_luts(np.random.default_rng(4), bank)
    expected = np.random.default_rng(4).choice(len(bank), size=2, replace=False)
    assert (first, second) == (bank[expected[0]], bank[expected[1]])


def test_given_a_natural_fraction_of_one_when_a_triplet_is_made_then_the_reference_and_target_keep_the_photo(luts):
    image = photo(np.random.default_rng(5), 80, 96)
    lut_a, lut_b = draw_luts(np.random.default_rng(1), list(luts), natural_fraction=1.0)
    assert lut_a in luts and lut_b.name == "identity"
    triplet = make_triplet(image, lut_a, lut_b, np.random.default_rng(2), crop_size=32)
    untouched = make_triplet(image, lut_a, identity_lut(17), np.random.default_rng(2), crop_size=32)
    assert np.array_equal(triplet.content_b, untouched.content_b)
    assert np.array_equal(triplet.content_b, apply_lut(triplet.content_b, identity_lut(17)))
    assert not np.array_equal(triplet.content_a, triplet.content_b)


def test_given_an_object_outline_when_a_region_triplet_is_made_then_it_takes_that_shape_reproducibly(luts):
    image = photo(np.random.default_rng(6), 96, 128)
    outline = np.zeros((40, 30), bool)
    outline[5:35, 10:20] = True  # a tall bar: a shape no blob would make
    made = [
        make_triplet(image, *luts, np.random.default_rng(3), crop_size=32, layout="region", outline=outline)
        for _ in range(2)
    ]
    blob = make_triplet(image, *luts, np.random.default_rng(3), crop_size=32, layout="region")
    assert made[0].layout == "region"
    assert all(np.array_equal(getattr(made[0], k), getattr(made[1], k)) for k in IMAGE_KEYS)
    assert made[0].content_box != blob.content_box
    assert not np.array_equal(made[0].reference_b, blob.reference_b)
