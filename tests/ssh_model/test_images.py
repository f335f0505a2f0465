"""Safe decoding: each fault gets its reason, each source mode comes back as RGB uint8 (or is rejected)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms

from ssh_model.images import (
    ImageError,
    decode_image,
    decode_image_with_mask,
    decode_mask,
    encode_image,
    output_format,
    probe_image,
    read_image,
    read_mask,
)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def encoded(array: np.ndarray, fmt: str, mode: str | None = None, **options) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_with_header_size(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose IHDR (with a correct CRC) claims ``width`` x ``height``: no pixels allocated."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00\x10\x20\x30")
    chunks = png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


# --- faults ---------------------------------------------------------------------------------------------


def test_zero_bytes_is_empty():
    with pytest.raises(ImageError) as caught:
        decode_image(b"", "a.jpg")
    assert caught.value.reason == "empty" and "a.jpg" in str(caught.value)


def test_a_zero_byte_mask_is_empty_not_a_missing_mask(rng):
    # given an RGBA composite (its alpha could stand in for a mask) and a mask file of zero bytes
    rgba = np.concatenate([rng.integers(0, 256, (8, 8, 3)), np.full((8, 8, 1), 128)], axis=2).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, "PNG")
    # when both are decoded, then the mask is the "empty" error naming it, not silently the alpha
    with pytest.raises(ImageError) as caught:
        decode_image_with_mask(buffer.getvalue(), b"", "c.png", "m.png")
    assert caught.value.reason == "empty" and "m.png" in str(caught.value)
    image, alpha = decode_image_with_mask(buffer.getvalue(), None, "c.png", "")
    assert image.shape == (8, 8, 3) and alpha.shape == (8, 8) and np.allclose(alpha, 128 / 255)


def test_garbage_is_unreadable(rng):
    with pytest.raises(ImageError) as caught:
        decode_image(rng.integers(0, 256, 500, dtype=np.uint8).tobytes(), "noise.bin")
    assert caught.value.reason == "unreadable" and "noise.bin" in str(caught.value)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_cut_file_is_truncated(rng, fmt):
    # Given a valid file cut in half
    data = encoded(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8), fmt)
    # When it is decoded, then the reason is "truncated" (never a half-grey image)
    with pytest.raises(ImageError) as caught:
        decode_image(data[: len(data) // 2], "cut")
    assert caught.value.reason == "truncated"


def test_huge_header_rejected_before_decoding():
    # Given a PNG whose header claims 20000 x 20000 (400 Mpx) but holds 4 bytes of pixel data
    data = png_with_header_size(20000, 20000)
    assert len(data) < 200
    # Then probing and decoding both reject it as too large
    for call in (probe_image, decode_image, decode_mask):
        with pytest.raises(ImageError) as caught:
            call(data, "bomb.png")
        assert caught.value.reason == "too_large"


def test_pixel_limit_is_ours_and_checked_from_the_header():
    # 9000 x 9000 = 81 Mpx: over our default limit of 80 Mpx, under Pillow's own thresholds
    with pytest.raises(ImageError) as caught:
        probe_image(png_with_header_size(9000, 9000), "big.png")
    assert caught.value.reason == "too_large" and "81000000" in str(caught.value)
    # an explicit limit wins over the default
    with pytest.raises(ImageError):
        decode_image(png_with_header_size(100, 100), "small.png", max_pixels=9999)
    info = probe_image(png_with_header_size(100, 100), "small.png", max_pixels=10000)
    assert (info.width, info.height, info.format, info.mode) == (100, 100, "PNG", "RGB")


def test_unknown_reason_is_refused():
    with pytest.raises(ValueError, match="unknown ImageError reason"):
        ImageError("bad", "x")


# --- modes ----------------------------------------------------------------------------------------------


def test_rgb_png_roundtrip_is_exact(rng):
    image = rng.integers(0, 256, (33, 47, 3), dtype=np.uint8)
    out = decode_image(encode_image(image, "png"))
    assert out.dtype == np.uint8 and np.array_equal(out, image)


def test_exif_orientation_is_applied(rng):
    # Given a 40 (high) x 60 (wide) JPEG tagged "rotate 90 CW to display" (orientation 6)
    image = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encoded(image, "JPEG", exif=exif.tobytes())
    # Then the decoded image is displayed upright: 60 high, 40 wide, and the header still says 60x40
    assert decode_image(data).shape == (60, 40, 3)
    assert (probe_image(data).width, probe_image(data).height) == (60, 40)
    # and masks are rotated the same way
    assert decode_mask(encoded(image[..., 0], "JPEG", exif=exif.tobytes())).shape == (60, 40)


def test_sixteen_bit_grey_is_scaled_not_clipped(rng):
    grey = rng.integers(0, 65536, (20, 30), dtype=np.uint16)
    grey[0, 0], grey[0, 1], grey[0, 2] = 65535, 0, 32768
    data = encoded(grey, "PNG")
    out = decode_image(data)
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    assert out[0, :3, 0].tolist() == [255, 0, 128]
    expected = np.rint(grey / 257.0).astype(np.uint8)
    assert np.abs(out[..., 0].astype(int) - expected).max() <= 1
    assert (out[..., 0] == out[..., 2]).all()
    with pytest.raises(ImageError) as caught:
        decode_image(data, "grey16.png", require_rgb=True)
    assert caught.value.reason == "not_rgb"


def test_grey_to_rgb_and_require_rgb(rng):
    grey = rng.integers(0, 256, (16, 24), dtype=np.uint8)
    out = decode_image(encoded(grey, "PNG"))
    assert out.shape == (16, 24, 3) and all(np.array_equal(out[..., c], grey) for c in range(3))
    for mode in ("L", "LA", "1"):
        with pytest.raises(ImageError) as caught:
            decode_image(encoded(grey, "PNG", mode=mode), "g.png", require_rgb=True)
        assert caught.value.reason == "not_rgb"


def test_cmyk_jpeg_converted_or_rejected(rng):
    image = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    data = encoded(image, "JPEG", mode="CMYK", quality=98)
    out = decode_image(data)
    assert out.shape == (24, 32, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - image.astype(int)).mean() < 12  # JPEG-lossy, colours preserved
    with pytest.raises(ImageError) as caught:
        decode_image(data, "cmyk.jpg", require_rgb=True)
    assert caught.value.reason == "not_rgb"


def test_rgba_drops_alpha_and_palette_converts(rng):
    rgba = rng.integers(0, 256, (12, 14, 4), dtype=np.uint8)
    assert np.array_equal(decode_image(encoded(rgba, "PNG"), require_rgb=True), rgba[..., :3])
    rgb = rng.integers(0, 256, (12, 14, 3), dtype=np.uint8)
    palette = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    buffer = io.BytesIO()
    palette.save(buffer, "PNG")
    expected = np.asarray(palette.convert("RGB"))
    assert np.array_equal(decode_image(buffer.getvalue(), require_rgb=True), expected)


def s15_fixed(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def display_p3_like_profile(gamma: float = 2.2) -> bytes:
    """A minimal ICC v2 RGB matrix/TRC profile with Display P3 primaries (D50-adapted) and a gamma curve."""

    def xyz(v):
        return b"XYZ " + bytes(4) + b"".join(s15_fixed(c) for c in v)

    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, int(gamma * 256)) + bytes(2)
    text = b"wide gamut test\0"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(8 + 2 + 1 + 67)
    primaries = [(0.5151, 0.2412, -0.0011), (0.2920, 0.6922, 0.0419), (0.1571, 0.0666, 0.7841)]
    tags = [(b"desc", desc), (b"wtpt", xyz((0.9642, 1.0, 0.8249)))]
    tags += [(sig, xyz(p)) for sig, p in zip((b"rXYZ", b"gXYZ", b"bXYZ"), primaries, strict=True)]
    tags += [(sig, curve) for sig in (b"rTRC", b"gTRC", b"bTRC")]
    start = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for sig, payload in tags:
        body += bytes(-(start + len(body)) % 4)
        table += sig + struct.pack(">II", start + len(body), len(payload))
        body += payload
    d50 = s15_fixed(0.9642) + s15_fixed(1.0) + s15_fixed(0.8249)
    size_cmm_version = struct.pack(">I", start + len(body)) + bytes(4) + struct.pack(">I", 0x02100000)
    header = size_cmm_version + b"mntrRGB XYZ " + bytes(12) + b"acsp" + bytes(28) + d50 + bytes(48)
    return header + struct.pack(">I", len(tags)) + table + body


def test_icc_profile_converted_to_srgb():
    # Given moderately saturated colours tagged with a wide-gamut (P3-like) profile
    image = np.array([[[200, 100, 80], [60, 150, 90]]], np.uint8)
    out = decode_image(encoded(image, "PNG", icc_profile=display_p3_like_profile()))
    # Then they come back in sRGB, where the same colours need more saturated values
    red, green = out[0, 0].astype(int), out[0, 1].astype(int)
    assert red[0] > 200 + 8 and red[1] < 100 and red[2] < 80
    assert green[0] < 60 - 20 and green[1] > 150
    # and an image tagged sRGB is left alone
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    assert np.array_equal(decode_image(encoded(image, "PNG", icc_profile=srgb)), image)


def test_unusable_icc_profile_is_ignored(rng):
    image = rng.integers(0, 256, (8, 9, 3), dtype=np.uint8)
    assert np.array_equal(decode_image(encoded(image, "PNG", icc_profile=b"not a profile")), image)


# --- masks ----------------------------------------------------------------------------------------------


def test_mask_from_grey_rgb_rgba_16bit_and_bilevel(rng):
    grey = rng.integers(0, 256, (10, 12), dtype=np.uint8)
    from_grey = decode_mask(encoded(grey, "PNG"))
    assert from_grey.dtype == np.float32 and np.allclose(from_grey, grey / 255.0)
    grey_rgb = np.repeat(grey[..., None], 3, 2)
    assert np.allclose(decode_mask(encoded(grey_rgb, "PNG")), grey / 255.0, atol=1 / 255)
    # an RGBA with a real alpha: the alpha is the mask
    rgba = np.concatenate([rng.integers(0, 256, (10, 12, 3), dtype=np.uint8), grey[..., None]], axis=2)
    assert np.allclose(decode_mask(encoded(rgba, "PNG")), grey / 255.0)
    # an opaque RGBA: the luminance is
    opaque = rgba.copy()
    opaque[..., :3], opaque[..., 3] = grey[..., None], 255
    assert np.allclose(decode_mask(encoded(opaque, "PNG")), grey / 255.0, atol=1 / 255)
    sixteen = grey.astype(np.uint16) * 257
    assert np.allclose(decode_mask(encoded(sixteen, "PNG")), grey / 255.0, atol=1e-6)
    bilevel = decode_mask(encoded(grey, "PNG", mode="1"))
    assert set(np.unique(bilevel)) <= {0.0, 1.0} and bilevel.mean() > 0


# --- encoding and URLs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "jpg", "WEBP"])
def test_encode_formats(rng, fmt):
    # a smooth image (noise is not what lossy codecs are for)
    yy, xx = np.mgrid[0:20, 0:28]
    smooth = np.stack([xx * 8, yy * 10, 128 + 0 * xx], axis=2).astype(np.uint8)
    image = smooth + rng.integers(0, 3, (20, 28, 3), dtype=np.uint8)
    data = encode_image(image, fmt, quality=90)
    info = probe_image(data)
    assert (info.width, info.height) == (28, 20)
    assert info.format == {"JPG": "JPEG"}.get(fmt.upper(), fmt.upper())
    assert np.abs(decode_image(data).astype(int) - image.astype(int)).mean() < 4


def test_encode_quality_and_errors(rng):
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert len(encode_image(image, "JPEG", quality=30)) < len(encode_image(image, "JPEG", quality=95))
    assert decode_image(encode_image(image[..., 0], "PNG")).shape == (32, 32, 3)
    with pytest.raises(ValueError, match="format"):
        encode_image(image, "BMP")
    with pytest.raises(TypeError):
        encode_image(image.astype(np.float32), "PNG")
    with pytest.raises(ValueError, match="quality"):
        encode_image(image, "JPEG", quality=0)


def test_read_image_and_mask_from_urls(tmp_path, rng):
    image = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    (tmp_path / "a.png").write_bytes(encode_image(image))
    (tmp_path / "m.png").write_bytes(encode_image(image[..., 1]))
    assert np.array_equal(read_image(str(tmp_path / "a.png")), image)
    assert np.allclose(read_mask(f"file://{tmp_path}/m.png"), image[..., 1] / 255.0)
    with pytest.raises(ImageError) as caught:
        read_image(str(tmp_path / "nope.png"))
    assert caught.value.reason == "missing" and "nope.png" in str(caught.value)


def test_lab_tiff_converted_through_littlecms(rng):
    image = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    data = encoded(image, "TIFF", mode="LAB")
    out = decode_image(data)
    assert out.shape == (10, 12, 3) and np.abs(out.astype(int) - image.astype(int)).mean() < 3
    assert decode_mask(data).shape == (10, 12)


def test_float_and_32bit_grey_tiffs(rng):
    values = rng.random((6, 7)).astype(np.float32)
    out = decode_image(encoded(values, "TIFF"))
    assert np.abs(out[..., 0].astype(float) - values * 255).max() <= 0.5 + 1e-6
    assert np.allclose(decode_mask(encoded(values, "TIFF")), values)
    sixteen_in_32 = rng.integers(0, 65536, (6, 7)).astype(np.int32)
    assert np.allclose(decode_mask(encoded(sixteen_in_32, "TIFF")), sixteen_in_32 / 65535.0, atol=1e-6)


def test_output_format_follows_the_extension_then_the_fallback():
    assert output_format("s3://b/x.JPEG", "PNG") == "JPEG"
    assert output_format("s3://b/x.webp?versionId=3") == "WEBP"
    assert output_format("s3://b/noext", "MPO") == "JPEG"
    assert output_format("s3://b/noext", "GIF") is None  # the batch job then writes PNG
    assert output_format("out.tif") is None
