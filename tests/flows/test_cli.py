"""The ``ssh-harmonize`` command line: composite, evaluate and catalog (in-process via ``main``, once installed)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flows.cli import main
from pipeline.catalog import read_table, write_catalog
from ssh_model.images import read_image, read_mask
from ssh_model.lut import apply_lut, random_lut
from ssh_model.metrics import evaluate
from tests.pipeline.batch_cases import ellipse_mask, encode, smooth_photo, write_case

SIZE = (40, 48)  # (H, W)


def write_image(path: Path, pixels: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(pixels, "PNG"))
    return str(path)


@pytest.fixture
def layers(tmp_path) -> dict[str, str]:
    """A foreground, a binary mask and a background, all SIZE, as PNG files."""
    rng = np.random.default_rng(0)
    return {
        "foreground": write_image(tmp_path / "fg.png", smooth_photo(rng, *SIZE)),
        "mask": write_image(tmp_path / "mask.png", ellipse_mask(*SIZE)),
        "background": write_image(tmp_path / "bg.png", smooth_photo(rng, *SIZE)),
    }


def composite_args(layers: dict[str, str], output: str, *options: str) -> list[str]:
    return ["composite", layers["foreground"], layers["mask"], layers["background"], "-o", output, *options]


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["composite"],
        ["evaluate"],
        ["catalog"],
        ["catalog", "iharmony4"],
        ["catalog", "realhm"],
        ["harmonize"],
        ["random-lut"],
        ["demo"],
    ],
)
def test_given_any_command_when_help_is_asked_then_its_arguments_are_explained(command, capsys):
    status = main([*command, "--help"])
    text = capsys.readouterr().out
    assert status == 0 and text.startswith("Usage: ssh-harmonize")
    expected = {
        "": ["composite", "evaluate", "catalog", "harmonize", "random-lut"],
        "composite": ["FOREGROUND", "MASK", "BACKGROUND", "--grade SEED", "--strength S", "--quality"],
        "evaluate": ["CATALOG", "--model URI", "--baselines", "--limit N", "--json OUT.json", "256x256"],
        "catalog": ["iharmony4", "realhm"],
        "iharmony4": ["DIR", "--split", "--subsets", "--skip-incomplete"],
        "realhm": ["DIR", "NAME_mask.jpg", "NAME_gt.jpg", "--skip-incomplete"],
        "harmonize": ["--background"],
        "random-lut": ["--seed", "--strength"],
        "demo": ["--data-root", "--steps"],
    }
    for word in expected[command[-1] if command else ""]:
        assert word in text


def test_given_layers_when_composited_then_the_mask_picks_the_foreground_over_the_background(layers, tmp_path):
    before = {name: Path(url).read_bytes() for name, url in layers.items()}
    output = str(tmp_path / "out" / "composite.png")
    assert main(composite_args(layers, output)) == 0

    composite = read_image(output)
    mask = ellipse_mask(*SIZE) > 0
    assert composite.shape == (*SIZE, 3)
    np.testing.assert_array_equal(composite[~mask], read_image(layers["background"])[~mask])
    np.testing.assert_array_equal(composite[mask], read_image(layers["foreground"])[mask])
    assert {name: Path(url).read_bytes() for name, url in layers.items()} == before
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["composite.png"]  # no temporary file left


def test_given_a_grade_when_composited_then_the_foreground_is_regraded_first(layers, tmp_path):
    output = str(tmp_path / "graded.png")
    assert main(composite_args(layers, output, "--grade", "3", "--strength", "0.8")) == 0

    composite, mask = read_image(output), ellipse_mask(*SIZE) > 0
    graded = apply_lut(read_image(layers["foreground"]), random_lut(3, strength=0.8))
    np.testing.assert_array_equal(composite[mask], graded[mask])
    np.testing.assert_array_equal(composite[~mask], read_image(layers["background"])[~mask])
    assert not np.array_equal(graded[mask], read_image(layers["foreground"])[mask])


@pytest.mark.parametrize(("name", "fmt"), [("c.jpg", "JPEG"), ("c.webp", "WEBP")])
def test_given_an_output_extension_when_composited_then_it_sets_the_format(layers, tmp_path, name, fmt):
    assert main(composite_args(layers, str(tmp_path / name))) == 0
    with Image.open(tmp_path / name) as written:
        assert written.format == fmt and written.size == (SIZE[1], SIZE[0])


def test_given_layers_of_different_sizes_when_composited_then_the_error_names_the_file_and_both_sizes(
    layers, tmp_path, capsys
):
    layers["mask"] = write_image(tmp_path / "small-mask.png", ellipse_mask(20, 24))
    assert main(composite_args(layers, str(tmp_path / "out.png"))) == 2
    error = capsys.readouterr().err
    assert f"mask {layers['mask']} is 24x20 but foreground {layers['foreground']} is 48x40" in error
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"background": "missing.png"}, "missing.png: no such file"),
        ({"output": "out.tif"}, "cannot tell the image format from '.tif'"),
        ({"output": "bg.png"}, "is also an input"),
        ({"options": ["--strength", "0.5"]}, "--strength needs --grade SEED"),
        ({"options": ["--grade", "3", "--strength", "-1"]}, "--strength must be >= 0"),
    ],
)
def test_given_bad_composite_input_when_run_then_it_exits_2_with_one_clear_line(layers, tmp_path, capsys, change, message):
    output = str(tmp_path / change.pop("output", "out.png"))
    options = change.pop("options", [])
    layers.update({key: str(tmp_path / value) for key, value in change.items()})
    assert main(composite_args(layers, output, *options)) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("ssh-harmonize composite: error: ") and message in error


def test_given_a_missing_input_when_the_installed_command_runs_then_it_exits_2_without_a_traceback(layers, tmp_path):
    command = Path(sys.executable).parent / "ssh-harmonize"
    layers["mask"] = str(tmp_path / "no-mask.png")
    done = subprocess.run(
        [str(command), *composite_args(layers, str(tmp_path / "out.png"))],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 2
    assert f"{layers['mask']}: no such file" in done.stderr and "Traceback" not in done.stderr


def direct_scores(row: dict[str, str]) -> dict[str, float]:
    """What ssh_model.metrics gives for the untouched composite against its ground truth."""
    return evaluate(read_image(row["composite"]), read_image(row["target"]), read_mask(row["mask"]))


def test_given_a_catalog_with_ground_truth_when_evaluated_then_the_table_has_every_method_and_exact_scores(
    tmp_path, tiny_model_url, capsys
):
    rng = np.random.default_rng(1)
    rows = [write_case(str(tmp_path), f"r{i}", rng, size=SIZE, fmt="PNG", background=i == 1) for i in range(2)]
    write_catalog(rows, str(tmp_path / "cat.csv"))
    report = str(tmp_path / "scores.json")
    assert main(["evaluate", str(tmp_path / "cat.csv"), "--model", tiny_model_url, "--json", report]) == 0

    out = capsys.readouterr().out
    for header in (
        "| set | method | items | mse | psnr | fmse | mse_256 | psnr_256 | fmse_256 |",
        "| model |",
        "| reinhard |",
        "| histogram |",
    ):
        assert header in out
    scored = json.loads(Path(report).read_text())
    summary = {row["method"]: row for row in scored["summary"]}
    assert list(summary) == ["model", "identity", "reinhard", "histogram"] and scored["failed"] == []
    direct = [direct_scores(row) for row in rows]
    for metric in ("mse", "psnr", "fmse", "mse_256", "psnr_256", "fmse_256"):
        assert summary["identity"][metric] == pytest.approx(np.mean([d[metric] for d in direct]), rel=1e-12)
    assert summary["identity"]["items"] == 2
    identity_line = next(line for line in out.splitlines() if "| identity |" in line)
    assert f"| {summary['identity']['psnr']:.2f} |" in identity_line
    per_row = {(row["method"], row["id"]): row for row in scored["rows"]}
    assert per_row[("identity", "r1")]["fmse"] == pytest.approx(direct[1]["fmse"], rel=1e-12)
    assert len(per_row) == 8


def test_given_bad_rows_when_evaluated_then_each_is_reported_and_left_out_and_the_exit_is_1(
    tmp_path, tiny_model_url, capsys
):
    rng = np.random.default_rng(2)
    good = write_case(str(tmp_path), "good", rng, size=SIZE, fmt="PNG")
    small_mask = write_case(str(tmp_path), "small-mask", rng, size=SIZE, fmt="PNG", mask_size=(20, 24))
    gone = write_case(str(tmp_path), "gone", rng, size=SIZE, fmt="PNG")
    os.remove(gone["composite"])
    no_target = write_case(str(tmp_path), "no-target", rng, size=SIZE, fmt="PNG", target=False)
    write_catalog([good, small_mask, gone, no_target], str(tmp_path / "cat.parquet"))
    report = tmp_path / "scores.json"
    code = main(
        [
            "evaluate",
            str(tmp_path / "cat.parquet"),
            "--model",
            tiny_model_url,
            "--baselines",
            "identity",
            "--json",
            str(report),
        ]
    )

    assert code == 1
    error = capsys.readouterr().err
    assert f"row 'small-mask' failed: mask {small_mask['mask']} is 24x20 but composite" in error
    assert f"row 'gone' failed: {gone['composite']}: no such file" in error
    assert "row 'no-target' failed: no target" in error
    assert "3 of 4 rows failed" in error
    scored = json.loads(report.read_text())
    assert {row["id"] for row in scored["rows"]} == {"good"}
    assert [s["items"] for s in scored["summary"]] == [1, 1]
    assert {f["id"] for f in scored["failed"]} == {"small-mask", "gone", "no-target"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--baselines", "identity,magic"], "unknown baselines magic"),
        (["--limit", "0"], "--limit must be at least 1"),
    ],
)
def test_given_bad_evaluate_options_when_run_then_it_exits_2(tmp_path, capsys, extra, message):
    row = write_case(str(tmp_path), "a", np.random.default_rng(3), size=SIZE, fmt="PNG")
    write_catalog([row], str(tmp_path / "cat.jsonl"))
    assert main(["evaluate", str(tmp_path / "cat.jsonl"), "--model", "unused.safetensors", *extra]) == 2
    assert message in capsys.readouterr().err


def test_given_a_catalog_without_targets_when_evaluated_then_it_exits_2_saying_so(tmp_path, capsys):
    row = write_case(str(tmp_path), "a", np.random.default_rng(4), size=SIZE, fmt="PNG", target=False)
    write_catalog([row], str(tmp_path / "cat.csv"))
    assert main(["evaluate", str(tmp_path / "cat.csv"), "--model", "unused.safetensors"]) == 2
    assert "has no target column: evaluate needs the ground truth" in capsys.readouterr().err


def test_given_a_missing_catalog_when_evaluated_then_it_exits_2_naming_it(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nope.parquet"), "--model", "unused.safetensors"]) == 2
    assert f"{tmp_path / 'nope.parquet'}: No such file" in capsys.readouterr().err


def write_iharmony4_images(root: Path, skip_mask: str | None = None) -> None:
    """Two subsets of real (tiny) images: HCOCO with two composites of one photo, HFlickr with one."""
    rng = np.random.default_rng(5)
    for subset, names in (("HCOCO", ["c1_1_1", "c1_1_2"]), ("HFlickr", ["f2_1_1"])):
        photo = smooth_photo(rng, *SIZE)
        stem = names[0].rsplit("_", 2)[0]
        write_image(root / subset / "real_images" / f"{stem}.jpg", photo)
        if skip_mask != f"{subset}/{stem}_1":
            write_image(root / subset / "masks" / f"{stem}_1.png", ellipse_mask(*SIZE))
        for name in names:
            shifted = np.clip(photo.astype(int) + rng.integers(-40, 40, size=3), 0, 255).astype(np.uint8)
            write_image(
                root / subset / "composite_images" / f"{name}.jpg",
                np.where(ellipse_mask(*SIZE)[..., None] > 0, shifted, photo),
            )
        (root / subset / f"{subset}_test.txt").write_text("".join(f"composite_images/{n}.jpg\n" for n in names))


def test_given_an_iharmony4_folder_when_cataloged_and_evaluated_then_every_listed_sample_is_scored(
    tmp_path, tiny_model_url, capsys
):
    write_iharmony4_images(tmp_path / "ih4")
    catalog = str(tmp_path / "ih4.parquet")
    assert main(["catalog", "iharmony4", str(tmp_path / "ih4"), "-o", catalog]) == 0
    assert "3 rows (HCOCO: 2, HFlickr: 1)" in capsys.readouterr().out
    columns, cells = read_table(catalog)
    assert columns == ["id", "composite", "mask", "target"]
    assert [c["id"] for c in cells] == ["HCOCO/c1_1_1", "HCOCO/c1_1_2", "HFlickr/f2_1_1"]

    report = tmp_path / "scores.json"
    assert (
        main(
            [
                "evaluate",
                catalog,
                "--model",
                tiny_model_url,
                "--baselines",
                "identity",
                "--limit",
                "2",
                "--json",
                str(report),
            ]
        )
        == 0
    )
    scored = json.loads(report.read_text())
    assert [s["items"] for s in scored["summary"]] == [2, 2] and scored["rows_total"] == 2


def test_given_an_iharmony4_sample_without_its_mask_when_cataloged_then_it_exits_2_naming_it(tmp_path, capsys):
    write_iharmony4_images(tmp_path / "ih4", skip_mask="HFlickr/f2_1")
    catalog = tmp_path / "ih4.csv"
    assert main(["catalog", "iharmony4", str(tmp_path / "ih4"), "-o", str(catalog)]) == 2
    assert "HFlickr/f2_1_1: missing mask masks/f2_1.png" in capsys.readouterr().err and not catalog.exists()

    assert (
        main(
            [
                "catalog",
                "iharmony4",
                str(tmp_path / "ih4"),
                "-o",
                str(catalog),
                "--skip-incomplete",
                "--subsets",
                "HFlickr,HCOCO",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "2 rows (HCOCO: 2)" in captured.out and "skipped 1 incomplete samples" in captured.err
    assert [c["id"] for c in read_table(str(catalog))[1]] == ["HCOCO/c1_1_1", "HCOCO/c1_1_2"]


def test_given_a_realhm_folder_when_cataloged_then_rows_have_backgrounds(tmp_path, capsys):
    folder = tmp_path / "RealHM" / "vendor_testing_1"
    for name in ("p1.jpg", "p1_mask.jpg", "p1_gt.jpg", "p1_bg.jpg", "p2.png", "p2_mask.png", "p2_gt.png"):
        write_image(folder / name, np.zeros((*SIZE, 3), np.uint8))
    catalog = str(tmp_path / "realhm.jsonl")
    assert main(["catalog", "realhm", str(tmp_path / "RealHM"), "-o", catalog]) == 0
    assert "2 rows (vendor_testing_1: 2)" in capsys.readouterr().out
    cells = read_table(catalog)[1]
    assert [(c["id"], c.get("background")) for c in cells] == [
        ("vendor_testing_1/p1", str(folder / "p1_bg.jpg")),
        ("vendor_testing_1/p2", None),
    ]

    assert main(["catalog", "realhm", str(tmp_path / "RealHM"), "-o", str(tmp_path / "x.txt")]) == 2
    assert "unknown catalog format '.txt'" in capsys.readouterr().err


def test_given_no_model_and_no_registry_when_harmonizing_then_the_shipped_weights_are_used_and_nothing_else_written(
    layers, tmp_path, monkeypatch
):
    from ssh_model.inference import harmonize
    from ssh_model.pretrained import load_pretrained

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SSH_MODEL_URI", "")
    monkeypatch.delenv("SSH_DATA_ROOT", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    before = sorted(p.name for p in tmp_path.iterdir())

    assert main(["harmonize", layers["foreground"], layers["mask"], "-o", "out.png"]) == 0

    expected = harmonize(read_image(layers["foreground"]), read_mask(layers["mask"]), load_pretrained())
    assert np.array_equal(read_image(str(tmp_path / "out.png")), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "out.png"])  # no data/ store created


def write_cutout(layers: dict[str, str], path: Path) -> str:
    """The foreground as an RGBA PNG whose alpha is the mask (a cut-out)."""
    rgba = np.dstack([read_image(layers["foreground"]), ellipse_mask(*SIZE)])
    return write_image(path, rgba)


def test_given_an_rgba_cutout_when_composited_without_a_mask_then_its_alpha_is_the_mask(layers, tmp_path):
    # given: the foreground as an RGBA cut-out
    cutout = write_cutout(layers, tmp_path / "cutout.png")

    # when: composite FG.png BG.png, and the same with the mask file
    assert main(["composite", cutout, layers["background"], "-o", str(tmp_path / "from-alpha.png")]) == 0
    assert main(composite_args(layers, str(tmp_path / "from-mask.png"))) == 0

    # then
    assert np.array_equal(read_image(str(tmp_path / "from-alpha.png")), read_image(str(tmp_path / "from-mask.png")))


def test_given_an_rgba_composite_when_harmonized_without_a_mask_then_its_alpha_is_the_mask(layers, tmp_path, capsys):
    cutout = write_cutout(layers, tmp_path / "cutout.png")

    assert main(["harmonize", cutout, "-o", str(tmp_path / "a.png")]) == 0
    assert main(["harmonize", layers["foreground"], layers["mask"], "-o", str(tmp_path / "m.png")]) == 0

    assert np.array_equal(read_image(str(tmp_path / "a.png")), read_image(str(tmp_path / "m.png")))
    assert main(["harmonize", layers["foreground"], "-o", str(tmp_path / "x.png")]) == 2
    assert f"{layers['foreground']} has no transparency" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_given_a_reference_mask_when_harmonized_then_it_changes_what_is_matched(layers, tmp_path, capsys):
    # given: a background that is red on the left and blue on the right, and a reference mask per side
    background = np.zeros((*SIZE, 3), np.uint8)
    background[:, : SIZE[1] // 2] = (220, 40, 30)
    background[:, SIZE[1] // 2 :] = (30, 60, 220)
    composite = np.where(ellipse_mask(*SIZE)[..., None] > 0, read_image(layers["foreground"]), background)
    composite_url = write_image(tmp_path / "c.png", composite.astype(np.uint8))
    left, right = np.zeros(SIZE, np.uint8), np.zeros(SIZE, np.uint8)
    left[:, :6], right[:, -6:] = 255, 255
    refs = {"left": write_image(tmp_path / "left.png", left), "right": write_image(tmp_path / "right.png", right)}

    # when
    for side, url in refs.items():
        assert (
            main(
                [
                    "harmonize",
                    composite_url,
                    layers["mask"],
                    "-o",
                    str(tmp_path / f"{side}-out.png"),
                    "--reference-mask",
                    url,
                ]
            )
            == 0
        )

    # then: matched to the red side the foreground is redder than matched to the blue side
    inside = ellipse_mask(*SIZE) > 0
    red = read_image(str(tmp_path / "left-out.png"))[inside].astype(float).mean(axis=0)
    blue = read_image(str(tmp_path / "right-out.png"))[inside].astype(float).mean(axis=0)
    assert red[0] - red[2] > blue[0] - blue[2] + 5
    assert (
        main(
            [
                "harmonize",
                composite_url,
                layers["mask"],
                "-o",
                str(tmp_path / "e.png"),
                "--reference-mask",
                write_image(tmp_path / "empty.png", np.zeros(SIZE, np.uint8)),
            ]
        )
        == 2
    )
    assert "empty.png is empty" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("output", "message"), [("out.bmp", "cannot tell the image format from '.bmp'"), ("fg.png", "is also an input")]
)
def test_given_a_bad_output_when_harmonizing_then_it_exits_2_before_any_work(layers, tmp_path, capsys, output, message):
    assert main(["harmonize", layers["foreground"], layers["mask"], "-o", str(tmp_path / output)]) == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "out.bmp").exists()


@pytest.mark.parametrize(
    ("command", "configs"),
    [
        (["ingest"], ["IngestConfig"]),
        (["build-triplets"], ["TripletConfig"]),
        (["train"], ["TrainModelConfig"]),
        (["compare-models"], ["CompareConfig"]),
        (["harmonize-batch"], ["BatchConfig"]),
        (["retrain"], ["IngestConfig", "TripletConfig", "TrainModelConfig"]),
    ],
)
def test_given_a_flow_command_when_help_is_asked_then_every_config_field_is_an_option_with_its_description(
    command, configs, capsys
):
    from pipeline import configs as stage_configs

    assert main([*command, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # help wraps lines
    fields = [(name, info) for config in configs for name, info in getattr(stage_configs, config).model_fields.items()]
    shared = {name for name, _ in fields if sum(other == name for other, _ in fields) > 1}
    for name, info in fields:
        option = f"--{name.replace('_', '-')}"
        assert (option in text) != (name in shared), option  # a shared field is --<section>-<field> instead
        assert " ".join(info.description.split()[:4]) in text
    if command == ["retrain"]:
        assert "--triplets-seed" in text and "--train-seed" in text


def test_given_a_bad_config_value_when_a_flow_command_runs_then_it_exits_2_naming_the_field(tmp_path, capsys):
    status = main(["harmonize-batch", str(tmp_path / "c.parquet"), "--jpeg-quality", "0"])

    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert status == 2
    assert error == "ssh-harmonize harmonize-batch: error: jpeg_quality: Input should be greater than or equal to 1"


def test_given_photos_when_the_ingest_command_runs_then_the_flow_adds_them_with_the_options_given(
    prefect_harness, tmp_path, capsys
):
    from pipeline.ingest import MANIFEST_SCHEMA, images_url
    from pipeline.ingest import read_table as read_manifest
    from tests.pipeline.photo_cases import good_files, write_files

    folder = str(tmp_path / "photos")
    write_files(folder, good_files(np.random.default_rng(5), 3))
    root = str(tmp_path / "data")

    status = main(["ingest", "--data-root", root, "--sources", folder, "--max-workers", "2"])

    summary = json.loads(capsys.readouterr().out)
    assert status == 0 and summary["added"] == summary["images"] == 3 and summary["sources"] == [folder]
    assert read_manifest(images_url(root, "manifest.parquet"), MANIFEST_SCHEMA).num_rows == 3
