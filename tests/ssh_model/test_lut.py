import re

import numpy as np
import pytest
import torch
from PIL import Image

from ssh_model import storage
from ssh_model.lut import (
    LUT,
    STRIP_MIN_PIXELS,
    CubeFormatError,
    apply_lut,
    apply_lut_reference,
    apply_lut_torch,
    bank_seed,
    format_cube,
    identity_grid,
    identity_lut,
    lut_bank,
    luts_to_tensor,
    parse_cube,
    random_lut,
    read_cube,
    read_cube_folder,
    write_cube,
)
from ssh_model.lut_generator import LUMA

SMALL_CUBE = """# a hand-written 2x2x2 LUT
TITLE "warm # test"

LUT_3D_SIZE 2
DOMAIN_MIN 0 0 0
DOMAIN_MAX 1 1 1
0.0 0.0 0.1   # (r=0, g=0, b=0)
1.0 0.0 0.0
0.0 1.0 0.0
1.0 1.0 0.0
0.0 0.0 1.0
1.0 0.0 1.0
0.0 1.0 1.0
0.9 0.9 0.9
"""


def smooth_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A natural-looking random photo: upsampled colour noise plus fine grain, uint8 (H, W, 3)."""
    small = rng.integers(0, 256, size=(max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC), np.int16)
    return np.clip(base + rng.integers(-6, 7, base.shape), 0, 255).astype(np.uint8)


def luma(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64) @ LUMA


def step_names(lut: LUT) -> list[str]:
    """The operations listed in a generated LUT's title, e.g. ['white_balance', 'contrast']."""
    return [part.split("(")[0] for part in lut.title.split(": ", 1)[1].split("; ")]


@pytest.fixture(scope="module")
def bank():
    return lut_bank(0, count=100, size=17)


# -- the LUT type and its layout ---------------------------------------------------------------------


def test_identity_table_is_indexed_b_g_r_and_flattens_in_cube_row_order():
    lut = identity_lut(5)
    assert lut.size == 5 and lut.table.dtype == np.float32 and lut.table.shape == (5, 5, 5, 3)
    assert lut.table[1, 2, 3].tolist() == [0.75, 0.5, 0.25]  # [b, g, r] holds (r, g, b)
    rows = lut.table.reshape(-1, 3)
    assert rows[1].tolist() == [0.25, 0.0, 0.0] and rows[5].tolist() == [0.0, 0.25, 0.0]  # red fastest
    assert rows[25].tolist() == [0.0, 0.0, 0.25]


def test_a_lut_keeps_a_private_read_only_float32_copy_and_rejects_bad_tables():
    source = identity_grid(3).astype(np.float64)
    lut = LUT(source, name="x")
    source[:] = 0.5
    assert lut.table.dtype == np.float32 and lut.table[2, 2, 2].tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="read-only"):
        lut.table[0, 0, 0, 0] = 1.0
    for bad in (np.zeros((3, 3, 3)), np.zeros((3, 3, 4, 3)), np.zeros((1, 1, 1, 3))):
        with pytest.raises(ValueError, match=r"\(N, N, N, 3\)"):
            LUT(bad)
    with pytest.raises(ValueError, match="non-finite"):
        LUT(np.full((2, 2, 2, 3), np.nan))
    with pytest.raises(ValueError, match="domain"):
        LUT(identity_grid(2), domain_min=(0, 0, 1), domain_max=(1, 1, 1))


# -- .cube files -------------------------------------------------------------------------------------


def test_given_a_cube_with_title_comments_and_domain_when_parsed_then_rows_fill_red_fastest():
    lut = parse_cube(SMALL_CUBE, source="small.cube")
    assert lut.title == "warm # test" and lut.size == 2 and lut.has_unit_domain
    assert lut.table[0, 0, 0].tolist() == pytest.approx([0.0, 0.0, 0.1])
    assert lut.table[0, 0, 1].tolist() == [1.0, 0.0, 0.0]  # second row: r = 1
    assert lut.table[0, 1, 0].tolist() == [0.0, 1.0, 0.0]  # third row: g = 1
    assert lut.table[1, 0, 0].tolist() == [0.0, 0.0, 1.0]  # fifth row: b = 1
    assert lut.table[1, 1, 1].tolist() == pytest.approx([0.9, 0.9, 0.9])


def test_resolve_style_input_range_bom_and_crlf_are_understood():
    text = "\ufeffLUT_3D_SIZE 2\r\nLUT_3D_INPUT_RANGE -0.5 1.5\r\nLUT_IN_VIDEO_RANGE\r\n" + "\r\n".join(
        " ".join(str(float(v)) for v in row) for row in identity_grid(2).reshape(-1, 3)
    )
    lut = parse_cube(text)
    assert lut.domain_min == (-0.5, -0.5, -0.5) and lut.domain_max == (1.5, 1.5, 1.5)
    np.testing.assert_array_equal(lut.table, identity_grid(2))


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("LUT_3D_SIZE 2\n" + "0 0 0\n" * 3 + "0 x 0\n" + "0 0 0\n" * 4, 5, "not a number"),
        ("LUT_3D_SIZE 2\n" + "0 0 0\n" * 2 + "0 0\n" + "0 0 0\n" * 5, 4, "needs 3 numbers, got 2"),
        ("LUT_3D_SIZE 2\n" + "0 0 0\n" * 2 + "0 0 0 0\n" + "0 0 0\n" * 5, 4, "needs 3 numbers, got 4"),
        ("LUT_3D_SIZE 2\n" + "0 0 0\n" * 9, 10, "more than LUT_3D_SIZE**3 = 8"),
        ("LUT_3D_SIZE 2\n" + "0 0 0\n" * 7 + "# trailing comment\n", 9, "= 8 table rows, found 7"),
        ('TITLE "no size"\n' + "0 0 0\n" * 8, 2, "before LUT_3D_SIZE"),
        ('TITLE "empty"\n# nothing else\n', 2, "no LUT_3D_SIZE"),
        ("# a 1D LUT\nLUT_1D_SIZE 1024\n", 2, "1D LUT"),
        ("LUT_3D_SIZE 1\n0 0 0\n", 1, "2..256"),
        ("LUT_3D_SIZE 2.5\n", 1, "one integer"),
        ("LUT_3D_SIZE 2\nLUT_3D_SIZE 2\n", 2, "given twice"),
        ("LUT_3D_SIZE 2\n" + "0 0 0\n" + "DOMAIN_MIN 0 0 0\n" + "0 0 0\n" * 7, 3, "after the table data"),
        ("LUT_3D_SIZE 2\nDOMAIN_MIN 0 0 0\nDOMAIN_MAX 1 0 1\n" + "0 0 0\n" * 8, 3, "below DOMAIN_MAX"),
        ("LUT_3D_SIZE 2\n" + "0 0 nan\n" + "0 0 0\n" * 7, 2, "non-finite"),
    ],
    ids=[
        "bad-number",
        "two-values",
        "four-values",
        "too-many-rows",
        "too-few-rows",
        "data-before-size",
        "no-size",
        "1d-lut",
        "size-too-small",
        "size-not-integer",
        "size-twice",
        "keyword-after-data",
        "empty-domain",
        "nan",
    ],
)
def test_given_a_malformed_cube_then_the_error_names_the_source_and_the_line(text, line, message):
    with pytest.raises(CubeFormatError, match=re.escape(message)) as caught:
        parse_cube(text, source="grades/bad.cube")
    assert f"grades/bad.cube, line {line}:" in str(caught.value)


def test_given_a_random_lut_when_written_and_read_back_then_it_is_exact_to_six_decimals(tmp_path):
    lut = random_lut(11, size=9)
    url = str(tmp_path / "looks" / "teal-orange.cube")
    write_cube(lut, url)
    back = read_cube(url)
    assert back.name == "teal-orange" and back.title == lut.title and back.size == 9
    assert np.abs(back.table - lut.table).max() <= 5e-7 + 1e-7
    assert format_cube(back) == format_cube(lut)  # a second round trip changes nothing
    assert storage.read_bytes(url).decode().count("\n") == 9**3 + 4  # comment, title, size, blank line


def test_a_non_unit_domain_survives_the_round_trip_in_memory_storage():
    lut = LUT(
        identity_grid(3) * 2.0,
        title='say "hi"\nthere',
        domain_min=(-0.25, 0.0, 0.0),
        domain_max=(1.25, 2.0, 1.0),
        name="wide",
    )
    write_cube(lut, "memory://lut-tests/wide.cube")
    back = read_cube("memory://lut-tests/wide.cube")
    assert back.domain_min == (-0.25, 0.0, 0.0) and back.domain_max == (1.25, 2.0, 1.0)
    assert back.title == "say 'hi' there"
    np.testing.assert_array_equal(back.table, lut.table)


def test_a_latin1_title_is_read_and_a_binary_file_is_a_format_error(tmp_path):
    text = 'TITLE "Caf\xe9"\nLUT_3D_SIZE 2\n' + "0 0 0\n" * 8
    (tmp_path / "cafe.cube").write_bytes(text.encode("latin-1"))
    assert read_cube(str(tmp_path / "cafe.cube")).title == "Caf\xe9"
    (tmp_path / "bin.cube").write_bytes(b"\x00\xff\xfe" * 10)
    with pytest.raises(CubeFormatError, match="bin.cube, line 1"):
        read_cube(str(tmp_path / "bin.cube"))


def test_a_cube_folder_lists_every_cube_below_it_sorted_by_name(tmp_path):
    root = tmp_path / "luts"
    for name, seed in (("b-look", 1), ("a-look", 2), ("film/kodak", 3)):
        write_cube(random_lut(seed, size=5), str(root / f"{name}.cube"))
    (root / "notes.txt").write_text("not a LUT")
    (root / "UPPER.CUBE").write_text(format_cube(identity_lut(2)))
    luts = read_cube_folder(str(root))
    assert [lut.name for lut in luts] == ["UPPER", "a-look", "b-look", "film/kodak"]
    np.testing.assert_allclose(luts[3].table, random_lut(3, size=5).table, atol=6e-7)
    with pytest.raises(FileNotFoundError, match="no LUT folder"):
        read_cube_folder(str(tmp_path / "missing"))


def test_given_cube_files_on_s3_when_the_folder_is_read_then_all_arrive(s3_prefix):
    for seed in (4, 5):
        write_cube(random_lut(seed, size=5), f"{s3_prefix}/bank/g{seed}.cube")
    storage.write_bytes_atomic(f"{s3_prefix}/bank/broken.cube", b"LUT_3D_SIZE 2\n0 0 0\n")
    with pytest.raises(CubeFormatError, match=r"broken\.cube, line 2: expected"):
        read_cube_folder(f"{s3_prefix}/bank")
    storage.filesystem(f"{s3_prefix}/bank/broken.cube")[0].rm(f"{s3_prefix}/bank/broken.cube")
    luts = read_cube_folder(f"{s3_prefix}/bank")
    assert [lut.name for lut in luts] == ["g4", "g5"]
    assert read_cube(f"{s3_prefix}/bank/g5.cube").title == random_lut(5, size=5).title


# -- the generator -----------------------------------------------------------------------------------


def test_random_lut_is_deterministic_per_seed_and_zero_strength_is_the_identity():
    first, again, other = random_lut(7, size=9), random_lut(7, size=9), random_lut(8, size=9)
    assert first.name == "gen-7" and first.title == again.title
    np.testing.assert_array_equal(first.table, again.table)
    assert np.abs(first.table - other.table).mean() > 0.005
    for seed in range(20):
        np.testing.assert_allclose(random_lut(seed, size=9, strength=0.0).table, identity_grid(9), atol=1e-6)
    with pytest.raises(ValueError, match="strength"):
        random_lut(1, strength=-0.5)


def test_strength_scales_one_grade_from_mild_to_strong():
    ident = identity_grid(9)
    for seed in range(10):
        changes = [np.abs(random_lut(seed, size=9, strength=s).table - ident).mean() for s in (0.2, 0.5, 1.0)]
        assert changes[0] < changes[1] < changes[2], (seed, changes)
        assert step_names(random_lut(seed, 9, 0.3)) == step_names(random_lut(seed, 9))  # the same grade


def test_a_bank_is_deterministic_named_and_built_from_derived_seeds(bank):
    assert [lut.name for lut in bank[:3]] == ["gen-s0-i0", "gen-s0-i1", "gen-s0-i2"]
    again = lut_bank(0, count=3, size=17)
    for a, b in zip(bank[:3], again, strict=True):
        np.testing.assert_array_equal(a.table, b.table)
    np.testing.assert_array_equal(bank[5].table, random_lut(bank_seed(0, 5), size=17).table)
    assert bank[5].title.startswith(f"gen-{bank_seed(0, 5)} ")
    assert not np.array_equal(lut_bank(1, count=1, size=17)[0].table, bank[0].table)


def test_a_mild_bank_holds_the_same_grades_mostly_gentler_and_other_distributions_are_refused(bank):
    # given the full-strength bank and the same seed drawn with the "mild" and "mixed" strengths
    ident = identity_lut(17).table
    mild = lut_bank(0, count=20, size=17, distribution="mild")
    mixed = lut_bank(0, count=20, size=17, distribution="mixed")
    # then every grade is the full one scaled down (the same steps), and the mild ones are the gentlest
    for name, variant in (("mild", mild), ("mixed", mixed)):
        changes = [
            np.abs(v.table - ident).mean() / np.abs(f.table - ident).mean() for v, f in zip(variant, bank[:20], strict=True)
        ]
        assert max(changes) <= 1.0 + 1e-6, name
        assert [step_names(v) for v in variant] == [step_names(f) for f in bank[:20]]
    mild_change = np.median([np.abs(v.table - ident).mean() for v in mild])
    mixed_change = np.median([np.abs(v.table - ident).mean() for v in mixed])
    assert mild_change < 0.6 * mixed_change
    np.testing.assert_array_equal(lut_bank(0, count=20, size=17, distribution="mild")[7].table, mild[7].table)
    with pytest.raises(ValueError, match="unknown strength distribution 'gentle'"):
        lut_bank(0, count=2, size=17, distribution="gentle")


def test_a_bank_of_100_grades_holds_100_clearly_distinct_luts(bank):
    flat = np.stack([lut.table.reshape(-1) for lut in bank]).astype(np.float32)  # (100, 17**3 * 3)
    distances = np.stack([np.abs(flat - row).mean(axis=1) for row in flat])  # (100, 100)
    off_diagonal = distances[~np.eye(len(bank), dtype=bool)]
    assert off_diagonal.min() > 0.01
    assert np.median(off_diagonal) > 0.05


def test_every_grade_of_the_bank_is_plausible(bank):
    ident = identity_grid(17)
    changes = []
    for lut in bank:
        table = lut.table.astype(np.float64)
        assert table.min() >= 0.0 and table.max() <= 1.0, lut.name
        y = luma(table)  # (17, 17, 17) over [b, g, r]
        for axis in range(3):  # no solarisation: raising any input channel never lowers the luma
            assert np.diff(y, axis=axis).min() >= -1e-6, (lut.name, axis)
        grey = y[np.arange(17), np.arange(17), np.arange(17)]
        assert grey[-1] - grey[0] > 0.6, lut.name  # the grey ramp keeps most of its range
        clipped = ((y <= 0.002) | (y >= 0.998)).mean()
        assert clipped < 0.01, (lut.name, clipped)  # no crushed tonal range
        changes.append(np.abs(table - ident).mean())
    assert min(changes) > 0.01 and max(changes) < 0.25
    assert 0.03 < np.median(changes) < 0.15


def test_graded_photo_keeps_the_grey_ramp_order_and_changes_it_visibly(bank):
    ramp = np.repeat(np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 4, axis=0), 3, axis=2)
    photo = smooth_image(np.random.default_rng(3), 64, 96)
    for lut in bank[::10]:
        y = luma(apply_lut(ramp, lut)[0])
        assert np.diff(y).min() >= -1.0, lut.name  # uint8 rounding may wobble by one level at most
        change = np.abs(apply_lut(photo, lut).astype(float) - photo).mean()
        assert 2.0 < change < 60.0, (lut.name, change)


# -- applying ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [17, 33])
def test_pillow_torch_and_float64_reference_agree_within_one_level(size):
    rng = np.random.default_rng(size)
    images = np.stack([rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(3)])
    luts = [random_lut(int(seed), size=size) for seed in rng.integers(0, 10_000, 3)]
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0  # (B, 3, H, W)
    per_image = apply_lut_torch(batch, luts_to_tensor(luts))  # (B, 3, H, W)
    shared = apply_lut_torch(batch, torch.from_numpy(luts[0].table.copy()))
    assert per_image.shape == batch.shape and per_image.dtype == torch.float32
    for i, lut in enumerate(luts):
        pillow = apply_lut(images[i], lut).astype(np.int64)
        reference = apply_lut_reference(images[i], lut)  # float64 (H, W, 3) in [0, 255]
        from_torch = np.rint(per_image[i].permute(1, 2, 0).numpy().astype(np.float64) * 255.0)
        assert np.abs(pillow - reference).max() <= 1.0
        assert np.abs(pillow - np.rint(reference)).max() <= 1
        assert np.abs(from_torch - np.rint(reference)).max() <= 1
        assert np.abs(from_torch - pillow).max() <= 1
        assert np.abs(pillow - images[i]).mean() > 1.0  # the grade did something
    np.testing.assert_allclose(shared[0].numpy(), per_image[0].numpy(), atol=1e-6)


def test_channels_are_not_swapped_anywhere():
    table = identity_grid(9).copy()
    table[..., 1] = table[..., 0]  # output (r, r, r): only red matters
    table[..., 2] = table[..., 0]
    lut = LUT(table)
    pixel = np.array([[[200, 10, 60]]], np.uint8)
    assert apply_lut(pixel, lut).tolist() == [[[200, 200, 200]]]
    assert np.rint(apply_lut_reference(pixel, lut)).tolist() == [[[200.0, 200.0, 200.0]]]
    out = apply_lut_torch(torch.tensor([[[[200.0]], [[10.0]], [[60.0]]]]) / 255, torch.from_numpy(table))
    assert torch.round(out * 255).flatten().tolist() == [200.0, 200.0, 200.0]


def test_a_large_image_is_graded_in_strips_exactly_like_one_pillow_call():
    rng = np.random.default_rng(5)
    image = smooth_image(rng, 640, 480)  # above STRIP_MIN_PIXELS: the threaded path
    assert image.shape[0] * image.shape[1] >= STRIP_MIN_PIXELS
    lut = random_lut(9)
    one_call = np.asarray(Image.fromarray(image).filter(lut.pillow_filter))
    np.testing.assert_array_equal(apply_lut(image, lut), one_call)
    np.testing.assert_array_equal(apply_lut(image, lut, threads=3), one_call)
    np.testing.assert_array_equal(apply_lut(image[:, ::-1], lut), one_call[:, ::-1])  # non-contiguous view
    assert lut.pillow_filter is lut.pillow_filter  # built once per LUT


def test_a_lut_with_a_wide_domain_or_a_big_grid_is_applied_to_the_right_colours():
    rng = np.random.default_rng(6)
    image = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
    low, high = np.array([-0.5, 0.0, -0.25]), np.array([1.5, 2.0, 1.25])
    inputs = low + identity_grid(9).astype(np.float64) * (high - low)  # the colour each grid point stands for
    matrix = np.array([[0.8, 0.1, 0.1], [0.05, 0.9, 0.05], [0.0, 0.2, 0.8]])
    lut = LUT(inputs @ matrix.T * 0.9 + 0.05, domain_min=tuple(low), domain_max=tuple(high))
    expected = np.clip((image / 255.0) @ matrix.T * 0.9 + 0.05, 0, 1) * 255  # affine: trilinear is exact
    assert np.abs(apply_lut(image, lut) - expected).max() <= 1.0
    assert np.abs(apply_lut_reference(image, lut) - expected).max() < 1e-4  # float32 table
    big = identity_lut(70)  # beyond Pillow's 65: resampled for Pillow
    assert np.abs(apply_lut(image, big).astype(int) - image).max() <= 1


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        (np.zeros((4, 4, 3), np.float32), ValueError, "uint8"),
        (np.zeros((4, 4), np.uint8), ValueError, r"\(H, W, 3\)"),
        (np.zeros((4, 4, 4), np.uint8), ValueError, r"\(H, W, 3\)"),
        (np.zeros((0, 4, 3), np.uint8), ValueError, "empty"),
        ([[[0, 0, 0]]], TypeError, "numpy"),
    ],
)
def test_apply_lut_rejects_what_is_not_a_uint8_rgb_image(bad, error, message):
    with pytest.raises(error, match=message):
        apply_lut(bad, identity_lut(2))


def test_apply_lut_torch_checks_shapes_and_passes_gradients():
    images = torch.rand(2, 3, 8, 8, requires_grad=True)
    tables = luts_to_tensor([random_lut(1, 9), random_lut(2, 9)]).requires_grad_(True)
    apply_lut_torch(images, tables).mean().backward()
    assert images.grad.abs().sum() > 0 and tables.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        apply_lut_torch(torch.rand(3, 8, 8), tables)
    with pytest.raises(ValueError, match="2 tables for 3 images"):
        apply_lut_torch(torch.rand(3, 3, 8, 8), tables)
    with pytest.raises(ValueError, match=r"\(N, N, N, 3\)"):
        apply_lut_torch(torch.rand(2, 3, 8, 8), torch.rand(2, 9, 9, 8, 3))
