import numpy as np
import pytest

from ssh_model.grades import PhotoGrade
from ssh_model.quality_set import (
    BUCKETS,
    assign_buckets,
    bucket_range,
    feather,
    foreground_pixels,
    graded_composite,
    lab_stats_distance,
    mean_delta_e,
    pasted_composite,
    photo_regrade,
    place_mask,
    strength_for_shift,
)

TOLERANCE = 0.5  # CIEDE2000: the search measures a strided sample, the test every fully covered pixel


def _photo(rng, height=48, width=64):
    """A smooth colour gradient with noise: (height, width, 3) uint8."""
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    base = np.stack([40 + 150 * xx / width, 30 + 170 * yy / height, 160 - 80 * xx / width], axis=-1)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


def _disc(height, width, cy, cx, radius):
    yy, xx = np.mgrid[:height, :width]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2


def _ellipse(height=48, width=64):
    yy, xx = np.mgrid[:height, :width]
    return ((yy - height / 2) / (0.3 * height)) ** 2 + ((xx - width / 2) / (0.3 * width)) ** 2 <= 1


def _core_shift(item):
    """Mean CIEDE2000 between target and composite over every pixel the mask covers fully."""
    core = (item.mask > 0.99).astype(np.float32)
    target, composite = (foreground_pixels(image, core, limit=10**9) for image in (item.target, item.composite))
    return mean_delta_e(target, composite)


@pytest.mark.parametrize("family", ["photo", "lut"])
@pytest.mark.parametrize("bucket", [b[0] for b in BUCKETS])
def test_given_a_bucket_when_a_graded_composite_is_made_then_the_foreground_shift_lies_in_its_range(bucket, family):
    low, high = bucket_range(bucket)
    photo = _photo(np.random.default_rng(0))
    for seed in (1, 2):
        item = graded_composite(f"c-{bucket}", photo, _ellipse(), bucket, np.random.default_rng(seed), family=family)
        assert item.level == bucket and item.id == f"c-{bucket}"
        assert item.composite.shape == photo.shape and item.composite.dtype == np.uint8
        assert np.array_equal(item.target, photo)
        assert low - TOLERANCE <= _core_shift(item) <= high + TOLERANCE, (seed, _core_shift(item), item.lut)


def test_given_a_graded_composite_when_made_then_pixels_outside_the_mask_are_unchanged_and_inside_they_change():
    photo = _photo(np.random.default_rng(3))
    mask = _ellipse()
    item = graded_composite("c", photo, mask, "medium", np.random.default_rng(4))
    assert item.mask.dtype == np.float32 and item.mask.shape == mask.shape
    assert item.mask.min() >= 0.0 and item.mask.max() <= 1.0
    outside = item.mask == 0
    assert outside.sum() > 0.3 * outside.size
    assert np.array_equal(item.composite[outside], photo[outside])
    inside = item.mask > 0.99
    assert np.abs(item.composite[inside].astype(int) - photo[inside]).mean() > 1.0
    assert not (mask & (item.mask == 0)).any(), "the feathered mask covers the whole hard mask"


def test_given_a_float32_soft_mask_when_a_graded_composite_is_made_then_the_mask_is_used_as_it_is():
    photo = _photo(np.random.default_rng(5))
    soft = feather(_ellipse()) * np.float32(0.9)
    item = graded_composite("c", photo, soft, "mild", np.random.default_rng(6))
    assert np.array_equal(item.mask, soft)


def test_given_a_0_255_mask_when_a_graded_composite_is_made_then_it_matches_the_bool_mask():
    photo = _photo(np.random.default_rng(7))
    as_bool = graded_composite("c", photo, _ellipse(), "mild", np.random.default_rng(8))
    as_bytes = graded_composite("c", photo, _ellipse().astype(np.uint8) * 255, "mild", np.random.default_rng(8))
    assert np.array_equal(as_bool.mask, as_bytes.mask)
    assert np.array_equal(as_bool.composite, as_bytes.composite)


@pytest.mark.parametrize("family", ["photo", "lut"])
def test_given_the_same_seed_when_made_twice_then_identical_and_another_seed_differs(family):
    photo = _photo(np.random.default_rng(9))
    make = lambda seed: graded_composite("c", photo, _ellipse(), "strong", np.random.default_rng(seed), family=family)  # noqa: E731
    first, second, other = make(10), make(10), make(11)
    assert np.array_equal(first.composite, second.composite) and first.lut == second.lut
    assert not np.array_equal(first.composite, other.composite)
    assert first.lut != other.lut


def test_given_the_lut_family_when_a_composite_is_made_then_its_grade_is_named_after_a_generator_seed():
    item = graded_composite("c", _photo(np.random.default_rng(12)), _ellipse(), "medium", np.random.default_rng(13), "lut")
    assert item.lut.startswith("gen-3")


def test_given_an_unknown_family_when_a_graded_composite_is_made_then_value_error():
    photo = _photo(np.random.default_rng(0))
    with pytest.raises(ValueError, match="family"):
        graded_composite("c", photo, _ellipse(), "mild", np.random.default_rng(0), family="curves")


def test_given_an_unknown_bucket_when_its_range_is_asked_then_value_error_and_known_ones_are_ordered():
    with pytest.raises(ValueError, match="extreme"):
        bucket_range("extreme")
    with pytest.raises(ValueError):
        graded_composite("c", _photo(np.random.default_rng(0)), _ellipse(), "extreme", np.random.default_rng(0))
    ranges = [bucket_range(name) for name, _, _ in BUCKETS]
    assert all(low < high for low, high in ranges)
    assert all(a[1] <= b[0] for a, b in zip(ranges, ranges[1:], strict=False))


def test_given_a_regrade_when_a_strength_is_searched_then_it_reaches_the_range_and_an_inert_one_gives_none():
    pixels = _photo(np.random.default_rng(14)).reshape(-1, 3)
    regrade = photo_regrade(PhotoGrade(temperature=0.4, exposure=0.4, saturation=-0.3))
    strength = strength_for_shift(pixels, regrade, 5.0, 12.0, np.random.default_rng(15))
    assert strength is not None and 0.0 < strength <= 3.0
    assert 5.0 <= mean_delta_e(pixels, regrade(pixels, strength)) <= 12.0
    assert strength_for_shift(pixels, lambda p, s: p, 1.0, 5.0, np.random.default_rng(15)) is None


def test_given_identical_pixels_when_the_mean_delta_e_is_measured_then_zero_and_a_colour_change_is_positive():
    pixels = _photo(np.random.default_rng(16)).reshape(-1, 3)
    assert mean_delta_e(pixels, pixels) == pytest.approx(0.0, abs=1e-9)
    assert mean_delta_e(pixels, np.clip(pixels.astype(int) + 30, 0, 255).astype(np.uint8)) > 5.0


def test_given_a_large_mask_when_foreground_pixels_are_taken_then_at_most_limit_pixels_from_inside_it():
    image = np.zeros((48, 64, 3), dtype=np.uint8)
    mask = np.zeros((48, 64), dtype=np.float32)
    mask[:, :32] = 1.0
    image[:, :32] = 200
    pixels = foreground_pixels(image, mask, limit=100)
    assert pixels.shape == (100, 3) and (pixels == 200).all()
    assert len(foreground_pixels(image, mask)) == 48 * 32


def test_given_a_hard_mask_when_feathered_then_float32_in_unit_range_with_a_soft_edge():
    mask = _disc(48, 64, 24, 32, 12)
    soft = feather(mask)
    assert soft.dtype == np.float32 and soft.shape == mask.shape
    assert soft.min() == 0.0 and soft.max() == 1.0
    assert soft[24, 32] == 1.0 and soft[0, 0] == 0.0
    assert ((soft > 0) & (soft < 1)).any()
    edge = mask ^ _disc(48, 64, 24, 32, 10)
    assert (soft[edge] < 1).any(), "the edge is blurred"
    assert np.array_equal(feather(mask.astype(np.uint8) * 255), soft)


@pytest.mark.parametrize("seed", range(6))
def test_given_an_object_outline_when_placed_then_a_bool_mask_covering_about_the_requested_area(seed):
    outline = _disc(30, 40, 15, 20, 8)  # another size than the image
    placed = place_mask(outline, 48, 64, np.random.default_rng(seed), area=(0.06, 0.3))
    assert placed.shape == (48, 64) and placed.dtype == bool
    assert placed.any()
    assert 0.8 * 0.06 <= placed.mean() <= 1.2 * 0.3
    assert np.array_equal(placed, place_mask(outline, 48, 64, np.random.default_rng(seed), area=(0.06, 0.3)))


def test_given_a_small_area_when_placed_then_the_object_is_smaller_than_with_a_large_area():
    outline = _disc(30, 40, 15, 20, 8)
    small = place_mask(outline, 48, 64, np.random.default_rng(0), area=(0.02, 0.03))
    large = place_mask(outline, 48, 64, np.random.default_rng(0), area=(0.25, 0.3))
    assert small.mean() < 0.05 < 0.18 < large.mean()


def test_given_an_empty_outline_when_placed_then_value_error():
    with pytest.raises(ValueError, match="empty"):
        place_mask(np.zeros((30, 40), dtype=bool), 48, 64, np.random.default_rng(0))


def test_given_a_red_object_and_a_blue_background_when_pasted_then_background_kept_and_a_large_lab_distance():
    foreground = np.zeros((40, 50, 3), dtype=np.uint8)
    foreground[..., 0] = 220
    background = np.zeros((48, 64, 3), dtype=np.uint8)
    background[..., 2] = 220
    item = pasted_composite("p", foreground, _disc(40, 50, 20, 25, 10), background, np.random.default_rng(0))
    assert item.id == "p" and item.composite.shape == background.shape and item.composite.dtype == np.uint8
    assert item.mask.dtype == np.float32 and item.mask.shape == (48, 64)
    outside = item.mask == 0
    assert outside.any() and (item.mask > 0.5).any()
    assert np.array_equal(item.composite[outside], background[outside])
    core = item.mask > 0.99
    assert (item.composite[core][:, 0] > 200).all() and (item.composite[core][:, 2] < 20).all()
    assert lab_stats_distance(item.composite, item.mask) > 50.0
    assert lab_stats_distance(background, item.mask) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_given_a_uniform_grey_image_when_any_mask_is_used_then_the_lab_distance_is_zero(seed):
    grey = np.full((48, 64, 3), 128, dtype=np.uint8)
    mask = feather(place_mask(_disc(30, 40, 15, 20, 8), 48, 64, np.random.default_rng(seed)))
    assert lab_stats_distance(grey, mask) == pytest.approx(0.0, abs=1e-6)


def test_given_a_mask_without_background_when_the_lab_distance_is_measured_then_value_error():
    with pytest.raises(ValueError):
        lab_stats_distance(np.full((48, 64, 3), 128, dtype=np.uint8), np.ones((48, 64), dtype=np.float32))


def test_given_seven_cases_when_buckets_are_assigned_then_mild_medium_strong_in_turn():
    assert assign_buckets(7) == ["mild", "medium", "strong", "mild", "medium", "strong", "mild"]
    assert assign_buckets(0) == []
    counts = {name: assign_buckets(100).count(name) for name, _, _ in BUCKETS}
    assert max(counts.values()) - min(counts.values()) <= 1
