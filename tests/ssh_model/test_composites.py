import numpy as np

from ssh_model.composites import EVAL_LEVELS, blob_mask, evaluation_set


def _photos(rng):
    return {name: rng.integers(0, 256, (48 + 8 * i, 64, 3), dtype=np.uint8) for i, name in enumerate(["b", "a"])}


def test_given_a_seed_when_a_blob_is_drawn_then_it_is_soft_partial_and_reproducible():
    mask = blob_mask(120, 90, np.random.default_rng(3))
    again = blob_mask(120, 90, np.random.default_rng(3))
    assert mask.shape == (120, 90) and mask.dtype == np.float32
    assert np.array_equal(mask, again)
    assert 0.04 < mask.mean() < 0.4
    assert ((mask > 0) & (mask < 1)).any(), "the edge is feathered"
    assert mask.min() == 0.0 and mask.max() == 1.0


def test_given_photos_when_the_evaluation_set_is_made_then_only_the_foreground_changes():
    photos = _photos(np.random.default_rng(0))
    items = evaluation_set(photos, seed=5)
    assert [item.id for item in items] == [f"{n}-{lvl}" for n in ("a", "b") for lvl, _ in EVAL_LEVELS]
    for item in items:
        outside = item.mask == 0
        assert np.array_equal(item.composite[outside], item.target[outside])
        assert np.abs(item.composite[item.mask == 1].astype(int) - item.target[item.mask == 1]).mean() > 0.5
    strong = [i for i in items if i.level == "strong"]
    mild = [i for i in items if i.level == "mild"]
    change = lambda item: np.abs(item.composite.astype(int) - item.target)[item.mask == 1].mean()  # noqa: E731
    assert np.mean([change(i) for i in strong]) > np.mean([change(i) for i in mild])


def test_given_the_same_seed_when_made_twice_then_identical_and_another_seed_differs():
    photos = _photos(np.random.default_rng(1))
    first, second, other = evaluation_set(photos, 2), evaluation_set(photos, 2), evaluation_set(photos, 3)
    assert all(np.array_equal(x.composite, y.composite) for x, y in zip(first, second, strict=True))
    assert any(not np.array_equal(x.mask, y.mask) for x, y in zip(first, other, strict=True))
