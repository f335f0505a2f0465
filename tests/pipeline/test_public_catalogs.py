"""Catalog rows from the public benchmarks' folder layouts (iHarmony4, RealHM), local and through fsspec."""

import os
import uuid

import pytest

from pipeline.catalog import CatalogError, build_catalog
from pipeline.public_catalogs import iharmony4_rows, realhm_rows
from ssh_model.storage import join, write_bytes_atomic

# iHarmony4 samples per subset: (composite name, its mask, its ground truth); no image is decoded here.
IHARMONY4_TREE = {
    "HCOCO": [
        ("c100_1_1.jpg", "c100_1.png", "c100.jpg"),
        ("c100_1_2.jpg", "c100_1.png", "c100.jpg"),
        ("c7_2_1.jpg", "c7_2.png", "c7.jpg"),
    ],
    "HFlickr": [("f5_1_1.jpg", "f5_1.png", "f5.jpg")],
}


def write_iharmony4(
    root: str, tree: dict = IHARMONY4_TREE, split: str = "test", prefix_first: bool = True, skip: tuple[str, ...] = ()
) -> None:
    """A tiny iHarmony4 tree; file names in ``skip`` (subset/folder/name) are not written."""
    for subset, samples in tree.items():
        lines = []
        for index, (composite, mask, target) in enumerate(samples):
            for folder, name in (("composite_images", composite), ("masks", mask), ("real_images", target)):
                if f"{subset}/{folder}/{name}" not in skip:
                    write_bytes_atomic(join(root, subset, folder, name), b"image bytes")
            lines.append(f"composite_images/{composite}" if prefix_first and index == 0 else composite)
        write_bytes_atomic(join(root, subset, f"{subset}_{split}.txt"), ("\n".join(lines) + "\n\n").encode())


def test_given_an_iharmony4_tree_when_listed_then_every_test_sample_has_its_mask_and_ground_truth(tmp_path):
    write_iharmony4(str(tmp_path))
    found = iharmony4_rows(str(tmp_path))

    assert [row["id"] for row in found.rows] == ["HCOCO/c100_1_1", "HCOCO/c100_1_2", "HCOCO/c7_2_1", "HFlickr/f5_1_1"]
    first = found.rows[0]
    assert first["composite"] == str(tmp_path / "HCOCO" / "composite_images" / "c100_1_1.jpg")
    assert first["mask"] == str(tmp_path / "HCOCO" / "masks" / "c100_1.png")
    assert first["target"] == str(tmp_path / "HCOCO" / "real_images" / "c100.jpg")
    assert "background" not in first and found.skipped == []
    assert all(os.path.exists(row[c]) for row in found.rows for c in ("composite", "mask", "target"))
    catalog = build_catalog("x.parquet", list(first), found.rows, str(tmp_path / "out"))  # a valid catalog
    assert catalog.has_target and len(catalog) == 4


def test_given_chosen_subsets_and_the_train_split_when_listed_then_only_those_lists_are_read(tmp_path):
    write_iharmony4(str(tmp_path), split="train")
    found = iharmony4_rows(str(tmp_path), split="train", subsets=["HFlickr"])
    assert [row["id"] for row in found.rows] == ["HFlickr/f5_1_1"]
    with pytest.raises(CatalogError, match=r"HCOCO: no list of test samples .*HCOCO_test\.txt"):
        iharmony4_rows(str(tmp_path), split="test")


def test_given_a_png_ground_truth_when_listed_then_it_is_found(tmp_path):
    write_iharmony4(str(tmp_path), {"Hday2night": [("d1_1_1.jpg", "d1_1.png", "d1.png")]})
    assert iharmony4_rows(str(tmp_path)).rows[0]["target"].endswith("real_images/d1.png")


def test_given_samples_missing_files_when_listed_then_one_error_lists_every_one(tmp_path):
    write_iharmony4(str(tmp_path), skip=("HCOCO/masks/c7_2.png", "HFlickr/real_images/f5.jpg"))
    with pytest.raises(CatalogError) as caught:
        iharmony4_rows(str(tmp_path))
    assert caught.value.problems == [
        "HCOCO/c7_2_1: missing mask masks/c7_2.png",
        "HFlickr/f5_1_1: missing target real_images/f5.jpg",
    ]

    found = iharmony4_rows(str(tmp_path), skip_incomplete=True)
    assert [row["id"] for row in found.rows] == ["HCOCO/c100_1_1", "HCOCO/c100_1_2"]
    assert len(found.skipped) == 2


def test_given_no_subset_folder_or_a_bad_line_when_listed_then_the_error_says_so(tmp_path):
    with pytest.raises(CatalogError, match="no iHarmony4 subset folder"):
        iharmony4_rows(str(tmp_path))
    write_iharmony4(str(tmp_path), {"HCOCO": [("c1.jpg", "c1.png", "c1.jpg")]})
    with pytest.raises(CatalogError, match=r"HCOCO_test.txt line 1: 'composite_images/c1.jpg' is not a composite"):
        iharmony4_rows(str(tmp_path))
    with pytest.raises(CatalogError, match="HFlickr: no folder"):
        iharmony4_rows(str(tmp_path), subsets=["HFlickr"])


def test_given_an_iharmony4_tree_behind_an_fsspec_url_when_listed_then_rows_are_urls():
    root = f"memory://ih4-{uuid.uuid4().hex[:8]}"
    write_iharmony4(root)
    found = iharmony4_rows(root + "/")
    assert len(found.rows) == 4
    assert found.rows[-1]["target"] == f"{root}/HFlickr/real_images/f5.jpg"


def write_files(root: str, names: list[str]) -> None:
    for name in names:
        write_bytes_atomic(join(root, name), b"image bytes")


def test_given_a_realhm_folder_when_listed_then_each_sample_has_composite_mask_ground_truth_and_background(tmp_path):
    write_files(
        str(tmp_path),
        [
            "vendor_testing_1/a.jpg",
            "vendor_testing_1/a_mask.jpg",
            "vendor_testing_1/a_gt.jpg",
            "vendor_testing_1/a_fore.jpg",
            "vendor_testing_1/a_small.jpg",
            "vendor_testing_2/b.png",
            "vendor_testing_2/b_composite.jpg",
            "vendor_testing_2/b_mask.png",
            "vendor_testing_2/b_gt.PNG",
            "vendor_testing_2/b_background.png",
            "c.jpg",
            "c_mask.jpg",
            "c_gt.jpg",
            "c_bg.jpg",
            "notes.txt",
            "d_small.jpg",
        ],
    )
    found = realhm_rows(str(tmp_path))

    rows = {row["id"]: row for row in found.rows}
    assert list(rows) == ["c", "vendor_testing_1/a", "vendor_testing_2/b"]
    assert rows["vendor_testing_1/a"] == {
        "id": "vendor_testing_1/a",
        "composite": str(tmp_path / "vendor_testing_1" / "a.jpg"),
        "mask": str(tmp_path / "vendor_testing_1" / "a_mask.jpg"),
        "target": str(tmp_path / "vendor_testing_1" / "a_gt.jpg"),
        "background": str(tmp_path / "vendor_testing_1" / "a_fore.jpg"),
    }
    assert rows["vendor_testing_2/b"]["composite"].endswith("b_composite.jpg")  # preferred over b.png
    assert rows["vendor_testing_2/b"]["target"].endswith("b_gt.PNG")
    assert rows["vendor_testing_2/b"]["background"].endswith("b_background.png")
    assert rows["c"]["background"].endswith("c_bg.jpg")


def test_given_a_realhm_sample_without_ground_truth_when_listed_then_it_is_named_or_skipped(tmp_path):
    write_files(str(tmp_path), ["a.jpg", "a_mask.jpg", "a_gt.jpg", "b.jpg", "b_mask.jpg", "c_gt.jpg"])
    with pytest.raises(CatalogError) as caught:
        realhm_rows(str(tmp_path))
    assert caught.value.problems == [
        "b: missing target b_gt.jpg",
        "c: missing composite c.jpg (or c_composite.jpg), mask c_mask.jpg",
    ]

    found = realhm_rows(str(tmp_path), skip_incomplete=True)
    assert [row["id"] for row in found.rows] == ["a"] and len(found.skipped) == 2
    with pytest.raises(CatalogError, match="is not a folder"):
        realhm_rows(str(tmp_path / "nowhere"))
