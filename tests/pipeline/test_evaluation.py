"""Evaluation of a model and the baselines on the fixed evaluation set and on validation triplets."""

import numpy as np
import pytest
import torch

from pipeline.evaluation import (
    comparison_grid,
    evaluate_composites,
    evaluate_triplets,
    fixed_evaluation_set,
    format_table,
    higher_is_better,
    methods_for,
    metrics_for_logging,
)
from ssh_model.baselines import BASELINES
from ssh_model.dataset import TripletDataset
from ssh_model.metrics import evaluate
from ssh_model.network import ssh_tiny
from tests.pipeline.training_cases import (
    one_torch_thread,  # noqa: F401 - a fixture
    write_triplet_version,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ssh_tiny().eval()


def test_given_the_same_arguments_when_the_fixed_set_is_made_twice_then_it_is_identical():
    first, second = fixed_evaluation_set(max_side=64, count=2), fixed_evaluation_set(max_side=64, count=2)
    assert [c.id for c in first] == [c.id for c in second] and len(first) == 6
    assert {c.level for c in first} == {"mild", "medium", "strong"}
    assert all(max(c.composite.shape[:2]) <= 64 for c in first)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a.composite, b.composite)
        np.testing.assert_array_equal(a.mask, b.mask)


def test_given_a_model_and_the_baselines_when_evaluated_then_every_method_scores_every_item(model):
    composites = fixed_evaluation_set(max_side=64, count=1)
    result = evaluate_composites(methods_for({"model": model}), composites, keep_outputs=True)
    summary = {row["method"]: row for row in result.summary()}

    assert result.methods == ["model", *BASELINES] and len(result.rows) == 4 * len(composites)
    direct = [evaluate(c.composite, c.target, c.mask)["psnr"] for c in composites]
    assert summary["identity"]["psnr"] == pytest.approx(np.mean(direct))
    assert result.score("identity", "fmse") == pytest.approx(summary["identity"]["fmse"])
    assert all(len(outputs) == len(composites) for outputs in result.outputs.values())
    assert result.outputs["model"][0].shape == composites[0].composite.shape
    by_level = result.summary(by_level=True)
    assert {(row["method"], row["level"]) for row in by_level} == {(m, c.level) for m in result.methods for c in composites}
    logged = metrics_for_logging(result)
    assert logged["fixed/identity/psnr"] == pytest.approx(summary["identity"]["psnr"])
    table = format_table(result.summary())
    assert all(f"| fixed | {method} |" in table for method in result.methods)


def test_given_val_triplets_when_evaluated_then_the_model_and_baselines_are_scored_against_the_pseudo_gt(tmp_path, model):
    root = write_triplet_version(
        str(tmp_path / "v1"), np.random.default_rng(3), {"train": 1, "val": 2}, crop_size=32, per_image=3
    )
    result = evaluate_triplets({"model": model}, root, "val", limit=5, batch_size=2)
    batch = next(iter(TripletDataset(root, split="val", batch_size=6, shuffle=False, drop_last=False)))
    identity_rows = [row for row in result.rows if row["method"] == "identity"]

    assert result.set_name == "val" and result.methods == ["model", *BASELINES]
    assert len(identity_rows) == 5 and [r["id"] for r in identity_rows] == batch["triplet_id"][:5]
    ones = np.ones((32, 32), np.float32)
    expected = [evaluate(batch["content_a"][i], batch["content_b"][i], ones)["mse"] for i in range(5)]
    assert [row["mse"] for row in identity_rows] == pytest.approx(expected)
    assert evaluate_triplets({"model": model}, root, split="test", limit=5) is None  # no such split: nothing to score


def test_given_outputs_when_gridded_then_rows_are_items_and_columns_are_methods():
    composites = fixed_evaluation_set(max_side=48, count=1)
    outputs = {"a": [c.composite for c in composites], "b": [c.target for c in composites]}
    grid = comparison_grid(composites, outputs, side=40, rows=2)
    assert grid.dtype == np.uint8 and grid.shape == (14 + 2 * 42 + 2, 4 * 42 + 2, 3)
    assert grid[16:56, 2:42].std() > 0  # the first composite is drawn, not left blank


def test_given_metric_names_when_asked_for_direction_then_errors_are_lower_is_better():
    assert higher_is_better("psnr") and higher_is_better("ssim_256")
    assert not higher_is_better("fmse") and not higher_is_better("mse_256")
    with pytest.raises(ValueError, match="unknown metric"):
        higher_is_better("accuracy")
