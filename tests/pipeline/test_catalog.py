"""Catalogs: three formats from any URL, outputs under one prefix, catalog-wide problems reported at once, nothing read.

Output confinement (each refused output fails its row alone) is tested in ``test_output_confinement``.
"""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.catalog import CatalogError, read_catalog, write_catalog
from ssh_model.errors import HarmonizeInputError
from ssh_model.storage import write_bytes_atomic


def rows(count=3, **extra):
    return [{"id": f"img-{i}", "composite": f"s3://in/c{i}.jpg", "mask": f"s3://in/m{i}.png", **extra} for i in range(count)]


@pytest.mark.parametrize("name", ["catalog.parquet", "catalog.csv", "catalog.jsonl"])
def test_given_each_format_when_read_then_rows_and_derived_outputs_keep_the_input_extension(tmp_path, name):
    url = str(tmp_path / name)
    write_catalog(rows(3), url)

    catalog = read_catalog(url, output_prefix="s3://out/run1")

    assert [r.id for r in catalog.rows] == ["img-0", "img-1", "img-2"]
    assert [r.output for r in catalog.rows] == [f"s3://out/run1/img-{i}.jpg" for i in range(3)]
    assert catalog.rows[0].composite == "s3://in/c0.jpg"
    assert catalog.results_dir == "s3://out/run1/_results"
    assert not catalog.has_target and not catalog.has_background


def test_given_a_memory_url_with_integer_ids_and_targets_when_read_then_ids_are_strings():
    url = "memory://catalog-test/ints.parquet"
    table = pa.table(
        {"id": [7, 8], "composite": ["a.png", "b.png"], "mask": ["ma.png", "mb.png"], "target": ["ta.png", None]}
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    write_bytes_atomic(url, sink.getvalue().to_pybytes())

    catalog = read_catalog(url, output_prefix="memory://catalog-test/out")

    assert [r.id for r in catalog.rows] == ["7", "8"]
    assert catalog.rows[0].composite == "memory://catalog-test/a.png"  # relative to the catalog's folder
    assert catalog.rows[0].target == "memory://catalog-test/ta.png"
    assert catalog.rows[1].target is None
    assert catalog.has_target


def test_given_relative_paths_when_read_then_inputs_resolve_against_the_catalog_and_outputs_against_the_prefix(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("SSH_DATA_ROOT", str(tmp_path / "data"))
    (tmp_path / "cat").mkdir()
    url = str(tmp_path / "cat" / "c.csv")
    write_catalog([{"id": "a", "composite": "imgs/a.png", "mask": "masks/a.png", "output": "out/a.png"}], url)

    catalog = read_catalog(url)

    assert catalog.rows[0].composite == str(tmp_path / "cat" / "imgs" / "a.png")
    assert catalog.output_prefix == str(tmp_path / "data" / "harmonized" / "c")
    assert catalog.rows[0].output == str(tmp_path / "data" / "harmonized" / "c" / "out" / "a.png")
    assert catalog.rows[0].output_refused is None


def test_given_missing_columns_when_read_then_the_error_names_them(tmp_path):
    url = str(tmp_path / "c.csv")
    write_catalog([{"id": "a", "mask": "s3://in/a.png"}], url)

    with pytest.raises(CatalogError) as caught:
        read_catalog(url, output_prefix="s3://out")

    assert "missing required column(s) composite" in str(caught.value)
    assert url in str(caught.value)


def test_given_many_bad_rows_when_read_then_one_error_lists_every_offending_row(tmp_path):
    url = str(tmp_path / "bad.jsonl")
    bad = [
        {"id": "ok", "composite": "s3://in/ok.png", "mask": "s3://in/okm.png"},
        {"id": "dup", "composite": "s3://in/d1.png", "mask": "s3://in/dm1.png"},
        {"id": "dup", "composite": "s3://in/d2.png", "mask": "s3://in/dm2.png"},
        {"id": "self", "composite": "s3://out/self.png", "mask": "s3://in/sm.png", "output": "s3://out/self.png"},
        {"id": "dots", "composite": "s3://in/x.png", "mask": "s3://in/xm.png", "output": "s3://out/../in/x2.png"},
        {"id": "nocomposite", "composite": "", "mask": "s3://in/n.png"},
        {"id": "clobber", "composite": "s3://in/k.png", "mask": "s3://in/km.png", "output": "s3://in/ok.png"},
        {"id": "twin-a", "composite": "s3://in/t1.png", "mask": "s3://in/tm.png", "output": "twin.png"},
        {"id": "twin-b", "composite": "s3://in/t2.png", "mask": "s3://in/tm.png", "output": "s3://out/twin.png"},
    ]
    write_bytes_atomic(url, "".join(json.dumps(r) + "\n" for r in bad).encode())

    with pytest.raises(CatalogError) as caught:
        read_catalog(url, output_prefix="s3://out")

    message = str(caught.value)
    problems = caught.value.problems
    assert "rows 2, 3: duplicate id 'dup'" in message
    assert "row 4 (id 'self'): output s3://out/self.png is its own input composite" in message
    assert "row 6 (id 'nocomposite'): empty composite" in message
    assert "row 7 (id 'clobber'): output s3://in/ok.png is row 1's input composite" in message
    assert "rows 8, 9: same output s3://out/twin.png" in message
    assert len(problems) == 5  # an unsafe output ('dots') fails its row alone, later
    assert not any("'ok'" in p or "'dots'" in p for p in problems)


def test_given_rows_without_a_mask_and_with_a_reference_mask_when_read_then_both_are_kept(tmp_path):
    # given: an RGBA cut-out row (no mask: its alpha is the mask) and a row matching a chosen region
    url = str(tmp_path / "c.csv")
    write_catalog(
        [
            {"id": "cutout", "composite": "in/cut.png", "mask": "", "reference_mask": ""},
            {"id": "wall", "composite": "in/w.png", "mask": "in/wm.png", "reference_mask": "in/wall.png"},
        ],
        url,
    )

    # when
    catalog = read_catalog(url, output_prefix=str(tmp_path / "out"))

    # then
    cutout, wall = catalog.rows
    assert cutout.mask is None and cutout.reference_mask is None
    assert wall.reference_mask == str(tmp_path / "in" / "wall.png")


def test_given_no_output_anywhere_and_no_prefix_when_read_then_outputs_go_under_the_default_prefix(tmp_path, monkeypatch):
    monkeypatch.setenv("SSH_DATA_ROOT", "s3://lake/root")
    url = str(tmp_path / "monday.csv")
    write_catalog(rows(2), url)

    catalog = read_catalog(url)

    assert catalog.output_prefix == "s3://lake/root/harmonized/monday"
    assert [r.output for r in catalog.rows] == [f"s3://lake/root/harmonized/monday/img-{i}.jpg" for i in range(2)]
    assert catalog.results_dir == "s3://lake/root/harmonized/monday/_results"


def test_given_an_unknown_extension_or_corrupt_parquet_when_read_then_clear_errors(tmp_path):
    (tmp_path / "c.xlsx").write_bytes(b"x")
    (tmp_path / "c.parquet").write_bytes(b"not parquet at all")

    with pytest.raises(CatalogError, match="unknown catalog format '.xlsx'"):
        read_catalog(str(tmp_path / "c.xlsx"), output_prefix="s3://o")
    with pytest.raises(CatalogError, match="not a Parquet file"):
        read_catalog(str(tmp_path / "c.parquet"), output_prefix="s3://o")


def test_given_a_missing_catalog_when_read_then_a_typed_missing_error_names_it():
    with pytest.raises(HarmonizeInputError) as caught:
        read_catalog("memory://catalog-test/nope.csv", output_prefix="memory://o")

    assert caught.value.reason == "missing"
    assert str(caught.value).startswith("catalog memory://catalog-test/nope.csv: no such file or object")


def test_given_an_unreachable_or_unsupported_catalog_url_when_read_then_one_line_typed_errors():
    with pytest.raises(HarmonizeInputError) as unreachable:
        read_catalog("http://127.0.0.1:1/c.csv", output_prefix="memory://o")
    with pytest.raises(HarmonizeInputError) as unsupported:
        read_catalog("foo://bucket/c.csv", output_prefix="memory://o")

    assert (unreachable.value.reason, unreachable.value.transient) == ("unreachable", True)
    assert "127.0.0.1:1" in str(unreachable.value) and "\n" not in str(unreachable.value)
    assert (unsupported.value.reason, unsupported.value.transient) == ("unsupported_url", False)


def test_given_unwritable_formats_when_read_then_derived_outputs_are_png_and_explicit_ones_rejected(tmp_path):
    url = str(tmp_path / "c.csv")
    write_catalog([{"id": "scan", "composite": "s3://in/scan.tif", "mask": "s3://in/m.png"}], url)
    assert read_catalog(url, output_prefix="s3://out").rows[0].output == "s3://out/scan.png"

    write_catalog(
        [{"id": "scan", "composite": "s3://in/scan.png", "mask": "s3://in/m.png", "output": "s3://out/scan.tif"}], url
    )
    refused = read_catalog(url, output_prefix="s3://out").rows[0].output_refused
    assert refused == "output s3://out/scan.tif has extension '.tif'; outputs end in .jpg, .jpeg, .png, .webp"
