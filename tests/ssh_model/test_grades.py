import numpy as np
import pytest

from ssh_model.grades import LOOK_SEEDS, PhotoGrade, apply_grade, random_grade


def _image(rng, low=0, high=256):
    return rng.integers(low, high, (48, 64, 3), dtype=np.uint8)


def _every_value():
    """Every uint8 value in every channel, and a few mixed colours: (256 + 64, 3)."""
    grey = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    mixed = np.random.default_rng(0).integers(0, 256, (64, 3), dtype=np.uint8)
    return np.concatenate([grey, mixed])


def _chroma(image):
    return image.max(axis=-1).astype(int) - image.min(axis=-1)


def _look_grade():
    """A unit-strength grade of ``random_grade`` that includes the optional look."""
    for seed in range(100):
        grade = random_grade(np.random.default_rng(seed))
        if grade.look_seed:
            return grade
    raise AssertionError("no grade with a look in 100 seeds")


def test_given_an_all_zero_grade_when_applied_to_every_uint8_value_then_the_output_is_identical():
    pixels = _every_value()
    out = apply_grade(pixels, PhotoGrade())
    changed = np.nonzero((out != pixels).any(axis=1))[0]
    assert changed.size == 0, f"the identity grade changed {pixels[changed][:5].tolist()} to {out[changed][:5].tolist()}"


def test_given_any_grade_when_scaled_by_zero_then_it_acts_as_the_all_zero_grade_and_leaves_mid_tones_alone():
    rng = np.random.default_rng(1)
    image, mid_tones = _image(rng), _image(rng, 0, 230)
    for grade in (random_grade(np.random.default_rng(3)), _look_grade()):
        zero = grade.scaled(0)
        assert zero.look_strength == 0.0 and zero.temperature == 0.0 and zero.saturation == 0.0
        assert np.array_equal(apply_grade(image, zero), apply_grade(image, PhotoGrade()))
        assert np.array_equal(apply_grade(mid_tones, zero), mid_tones)


def test_given_a_grade_with_a_look_when_applied_to_pixels_or_an_image_then_the_shape_dtype_and_values_agree():
    image = _image(np.random.default_rng(2))
    grade = _look_grade()
    as_image = apply_grade(image, grade)
    as_pixels = apply_grade(image.reshape(-1, 3), grade)
    assert as_image.shape == image.shape and as_image.dtype == np.uint8
    assert as_pixels.shape == (48 * 64, 3) and as_pixels.dtype == np.uint8
    assert np.array_equal(as_pixels, as_image.reshape(-1, 3))
    assert not np.array_equal(as_image, image)


def test_given_the_same_seed_when_grades_are_drawn_then_they_are_equal_and_another_seed_differs():
    first, second = random_grade(np.random.default_rng(11)), random_grade(np.random.default_rng(11))
    other = random_grade(np.random.default_rng(12))
    assert first == second
    assert first != other
    image = _image(np.random.default_rng(0))
    assert np.array_equal(apply_grade(image, first), apply_grade(image, second))


def test_given_many_seeds_when_grades_are_drawn_then_some_have_a_look_from_the_reserved_seed_range():
    grades = [random_grade(np.random.default_rng(seed)) for seed in range(60)]
    looks = [g for g in grades if g.look_seed]
    assert 0 < len(looks) < len(grades)
    assert all(LOOK_SEEDS[0] <= g.look_seed < LOOK_SEEDS[1] and g.look_strength > 0 for g in looks)
    assert all(g.look_strength == 0.0 for g in grades if not g.look_seed)
    assert all(-0.95 < g.contrast < 0.95 for g in grades)


def test_given_a_grade_when_its_strength_grows_then_the_mean_change_grows():
    image = _image(np.random.default_rng(4))
    for seed in range(5):
        grade = random_grade(np.random.default_rng(seed))
        changes = [np.abs(apply_grade(image, grade.scaled(s)).astype(int) - image).mean() for s in (0.25, 0.5, 1.0, 2.0)]
        assert all(a < b for a, b in zip(changes, changes[1:], strict=False)), (seed, changes)


def test_given_a_positive_exposure_when_applied_then_every_pixel_is_at_least_as_bright_and_the_mean_rises():
    image = _image(np.random.default_rng(5), 0, 200)
    out = apply_grade(image, PhotoGrade(exposure=0.5))
    assert (out.astype(int) >= image).all()
    assert out.mean() > image.mean() + 5
    darker = apply_grade(image, PhotoGrade(exposure=-0.5))
    assert darker.mean() < image.mean() - 5


def test_given_a_negative_saturation_when_applied_then_chroma_falls():
    image = _image(np.random.default_rng(6))
    out = apply_grade(image, PhotoGrade(saturation=-0.5))
    assert _chroma(out).mean() < 0.8 * _chroma(image).mean()
    assert (_chroma(out) <= _chroma(image) + 1).all()
    assert _chroma(apply_grade(image, PhotoGrade(saturation=-20.0))).max() <= 1, "a huge desaturation is grey"


@pytest.mark.parametrize("shape", [(48, 64, 4), (48, 64), (10, 1)])
def test_given_pixels_without_three_channels_when_graded_then_value_error(shape):
    with pytest.raises(ValueError, match="3"):
        apply_grade(np.zeros(shape, dtype=np.uint8), PhotoGrade(exposure=0.3))
