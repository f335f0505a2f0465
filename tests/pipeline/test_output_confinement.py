"""Outputs are confined to one prefix: a row whose output would leave it is refused alone, the prefix never
comes from the rows, and ``_results/`` belongs to that prefix (the batch run itself: ``test_row_errors``)."""

import os

import pytest

from pipeline.catalog import build_catalog, default_output_prefix, read_catalog, write_catalog

COLUMNS = ["id", "composite", "mask", "output"]


def catalog_of(outputs: dict[str, str | None], prefix: str | None, url: str = "s3://in/catalog.csv"):
    cells = [
        {"id": row_id, "composite": f"s3://in/{i}.jpg", "mask": f"s3://in/{i}-m.png", "output": output}
        for i, (row_id, output) in enumerate(outputs.items())
    ]
    return build_catalog(url, COLUMNS, cells, prefix)


def refusals(catalog) -> dict[str, str | None]:
    return {row.id: row.output_refused for row in catalog.rows}


def test_given_outputs_relative_or_absolute_under_the_prefix_when_placed_then_all_are_accepted():
    catalog = catalog_of(
        {"rel": "shots/a.png", "abs": "s3://out/run/b.JPG", "derived": None, "dotted": "./c.webp"}, "s3://out/run/"
    )

    assert refusals(catalog) == dict.fromkeys(["rel", "abs", "derived", "dotted"])
    assert [r.output for r in catalog.rows] == [
        "s3://out/run/shots/a.png",
        "s3://out/run/b.JPG",
        "s3://out/run/derived.jpg",
        "s3://out/run/c.webp",
    ]


@pytest.mark.parametrize(
    ("output", "why"),
    [
        ("../escape.jpg", "contains '..'"),
        ("s3://out/run/a/../../b.jpg", "contains '..'"),
        ("s3://other/run/a.jpg", "is outside the output prefix s3://out/run"),
        ("s3://out/run2/a.jpg", "is outside the output prefix s3://out/run"),
        ("s3://out/a.jpg", "is outside the output prefix s3://out/run"),
        ("/etc/passwd.png", "is outside the output prefix s3://out/run"),
        ("gs://out/run/a.jpg", "is outside the output prefix s3://out/run"),
        (".bashrc", "has no image extension"),
        ("home/.ssh/authorized_keys", "has no image extension"),
        ("notes.txt", "has extension '.txt'"),
        ("_results/report.png", "is inside the reserved results folder s3://out/run/_results"),
    ],
)
def test_given_an_unsafe_output_when_placed_then_only_that_row_is_refused(output, why):
    catalog = catalog_of({"good": "good.png", "bad": output}, "s3://out/run")

    assert refusals(catalog)["good"] is None
    assert refusals(catalog)["bad"].startswith(f"output {catalog.rows[1].output} {why}")


def test_given_an_id_that_climbs_when_its_output_is_derived_then_the_row_is_refused():
    catalog = catalog_of({"../../up": None, "fine": None}, "s3://out/run")

    assert "contains '..'" in refusals(catalog)["../../up"]
    assert refusals(catalog)["fine"] is None


def test_given_a_symbolic_link_out_of_a_local_prefix_when_placed_then_the_row_is_refused(tmp_path):
    prefix, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    prefix.mkdir()
    elsewhere.mkdir()
    (prefix / "link").symlink_to(elsewhere, target_is_directory=True)

    catalog = catalog_of({"linked": "link/a.png", "plain": "sub/a.png"}, str(prefix))

    assert "through a symbolic link" in refusals(catalog)["linked"]
    assert refusals(catalog)["plain"] is None


def test_given_no_prefix_when_read_then_the_default_is_under_the_data_root_and_never_from_the_rows(tmp_path, monkeypatch):
    data_root = tmp_path / "data"
    monkeypatch.setenv("SSH_DATA_ROOT", str(data_root))
    home = tmp_path / "home"
    url = str(tmp_path / "jobs" / "batch-7.jsonl")
    write_catalog(
        [
            {"id": "rc", "composite": "a.jpg", "mask": "m.png", "output": str(home / ".bashrc")},
            {"id": "pic", "composite": "b.jpg", "mask": "m.png", "output": str(home / "pic.jpg")},
            {"id": "fine", "composite": "c.jpg", "mask": "m.png"},
        ],
        url,
    )

    catalog = read_catalog(url)

    expected = str(data_root / "harmonized" / "batch-7")
    assert catalog.output_prefix == default_output_prefix(url) == expected
    assert catalog.results_dir == os.path.join(expected, "_results")
    assert refusals(catalog) == {
        "rc": f"output {home / '.bashrc'} is outside the output prefix {expected}",
        "pic": f"output {home / 'pic.jpg'} is outside the output prefix {expected}",
        "fine": None,
    }
    assert catalog.rows[2].output == os.path.join(expected, "fine.jpg")


def test_given_a_relative_local_prefix_when_read_then_it_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    catalog = catalog_of({"a": "x/a.png"}, "out/run/")

    assert catalog.output_prefix == str(tmp_path / "out" / "run")
    assert catalog.rows[0].output == str(tmp_path / "out" / "run" / "x" / "a.png")
