"""Generated photos and broken files for the ingest tests (tasks and flows)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

from ssh_model.storage import join, write_bytes_atomic


def smooth_photo(rng: np.random.Generator, height: int = 136, width: int = 160) -> np.ndarray:
    """A random smooth colour image (upsampled noise), uint8 (H, W, 3)."""
    small = rng.integers(0, 256, size=(max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC))


def encode(array: np.ndarray, fmt: str, mode: str | None = None) -> bytes:
    picture = Image.fromarray(array)
    if mode is not None:
        picture = picture.convert(mode)
    buffer = io.BytesIO()
    picture.save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def huge_png_header(width: int = 20000, height: int = 20000) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` RGB pixels (nothing that big is allocated)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )


def corrupt_png(photo: np.ndarray) -> bytes:
    """A PNG whose compressed pixel data is scrambled (the header still reads fine)."""
    data = bytearray(encode(photo, "PNG"))
    start = data.index(b"IDAT") + 4
    data[start + 16 : start + 216] = bytes(reversed(data[start + 16 : start + 216]))
    return bytes(data)


def fault_files(rng: np.random.Generator) -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, the reject reason ingest must give it)."""
    photo = smooth_photo(rng)
    jpeg = encode(photo, "JPEG")
    return {
        "corrupt.png": (corrupt_png(photo), "unreadable"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated"),
        "empty.png": (b"", "empty"),
        "huge.png": (huge_png_header(), "too_large"),
        "gray.jpg": (encode(photo, "JPEG", mode="L"), "not_rgb"),
        "cmyk.jpg": (encode(photo, "JPEG", mode="CMYK"), "not_rgb"),
        "tiny.jpg": (encode(smooth_photo(rng, 40, 48), "JPEG"), "too_small"),
        "notes.png": (b"this is not an image at all", "unreadable"),
        "gif-named.png": (encode(photo, "GIF"), "unsupported"),
    }


def good_files(rng: np.random.Generator, count: int, start: int = 0) -> dict[str, bytes]:
    """``count`` distinct colour photos in turn JPEG, PNG and WebP."""
    formats = [("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp")]
    files = {}
    for number in range(start, start + count):
        fmt, ext = formats[number % 3]
        files[f"photo-{number:03d}.{ext}"] = encode(smooth_photo(rng), fmt)
    return files


def write_files(root: str, files: dict[str, bytes]) -> list[str]:
    urls = []
    for name, data in files.items():
        url = join(root, name)
        write_bytes_atomic(url, data)
        urls.append(url)
    return urls
