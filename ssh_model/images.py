"""Safe image and mask decoding, and encoding, for everything that reads pixels from outside.

Every decode goes the same way:
1. ``Image.open`` reads the header only; the pixel limit (``max_pixels``, default
   ``Settings.max_image_pixels``) is checked on width x height BEFORE any pixel is decoded
   (Pillow's own decompression-bomb error maps to the same reason).
2. The whole image is decoded with Pillow's default ``LOAD_TRUNCATED_IMAGES = False``, so a cut
   file fails instead of coming back half grey.
3. EXIF orientation is applied, so ``(H, W)`` is the image as people see it.
4. The pixels are converted to RGB uint8 (see ``decode_image``).

Failures raise ``ImageError`` (a ``ssh_model.errors.HarmonizeInputError``, so a ``ValueError``) whose
``reason`` is one of ``REASONS`` and whose message names the item: the decoding reasons, and for
``read_image``/``read_mask`` the storage reasons of ``ssh_model.errors`` (missing, unreachable, ...).
"""

from __future__ import annotations

import io
import logging
import posixpath
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from ssh_model.errors import IMAGE_REASONS, STORAGE_REASONS, HarmonizeInputError, storage_error
from ssh_model.inputs import composite_and_mask
from ssh_model.settings import get_settings

logger = logging.getLogger(__name__)

REASONS = frozenset(IMAGE_REASONS) | frozenset(STORAGE_REASONS)
# Modes that carry no colour: rejected by ``require_rgb=True``.
NON_COLOUR_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F", "CMYK"})
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
ENCODE_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "JPG": "JPEG", "WEBP": "WEBP"}
# The file extensions images are read from and written with (lower case), and the format each one means.
FORMATS_BY_EXTENSION = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}
IMAGE_EXTENSIONS = tuple(FORMATS_BY_EXTENSION)
_SRGB_PROFILE = ImageCms.createProfile("sRGB")


class ImageError(HarmonizeInputError):
    """An image that cannot be used; ``reason`` is one of ``REASONS``.

    Args:
        reason: the machine-readable cause, e.g. "truncated".
        message: what happened, naming the item.
    """

    allowed_reasons = REASONS


@dataclass(frozen=True)
class ImageInfo:
    """What the header says (width and height as stored, before EXIF rotation)."""

    width: int
    height: int
    format: str
    mode: str


def _pixel_limit(max_pixels: int | None) -> int:
    return int(get_settings().max_image_pixels if max_pixels is None else max_pixels)


def _riff_truncated(data: bytes) -> bool:
    """True for a RIFF container (WebP) shorter than its header says: Pillow cannot tell us that."""
    if len(data) < 12 or data[:4] != b"RIFF":
        return False
    return len(data) < int.from_bytes(data[4:8], "little") + 8


def _open(data: bytes, name: str, max_pixels: int | None) -> Image.Image:
    """The lazily opened image (header parsed, no pixels decoded) after the size checks."""
    if not data:
        raise ImageError("empty", f"{name}: zero bytes")
    if _riff_truncated(data):
        raise ImageError("truncated", f"{name}: file is shorter than its RIFF header says")
    limit = _pixel_limit(max_pixels)
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:  # Pillow's own, larger limit: quote ours
        counted = re.search(r"(\d+) pixels", str(err))
        pixels = int(counted.group(1)) if counted else None
        if pixels is not None and pixels <= limit:  # only when our limit is set above Pillow's
            raise ImageError(
                "too_large",
                f"{name}: {pixels} pixels is over Pillow's decompression-bomb limit ({err}); the pixel limit is {limit}",
            ) from err
        size = f"{pixels} pixels" if pixels is not None else "the image"
        raise ImageError("too_large", f"{name}: {size} is over the limit of {limit} pixels") from err
    except UnidentifiedImageError as err:
        raise ImageError("unreadable", f"{name}: not a recognised image format") from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        reason = "truncated" if "truncated" in str(err).lower() else "unreadable"
        raise ImageError(reason, f"{name}: cannot read header: {err.__class__.__name__}: {err}") from err
    width, height = image.size
    if width * height > limit:
        raise ImageError("too_large", f"{name}: {width}x{height} = {width * height} pixels is over the limit of {limit}")
    if width < 1 or height < 1:
        raise ImageError("unreadable", f"{name}: header says {width}x{height}")
    return image


def _load(image: Image.Image, name: str) -> Image.Image:
    """Decode every pixel (truncation is an error) and apply the EXIF orientation."""
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        reason = "truncated" if "truncated" in str(err).lower() else "unreadable"
        raise ImageError(reason, f"{name}: cannot decode pixels: {err.__class__.__name__}: {err}") from err
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except Exception as err:  # a malformed EXIF block must not lose the picture
        logger.warning("%s: ignoring unreadable EXIF orientation (%s: %s)", name, err.__class__.__name__, err)
    return image


def probe_image(data: bytes, name: str = "<bytes>", max_pixels: int | None = None) -> ImageInfo:
    """Header facts of an encoded image without decoding pixels; raises ``ImageError`` (empty,
    unreadable, truncated, too_large)."""
    image = _open(data, name, max_pixels)
    return ImageInfo(width=image.width, height=image.height, format=str(image.format), mode=image.mode)


def _sixteen_bit_to_uint8(values: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255 with rounding (65535 -> 255, 32768 -> 128)."""
    scaled = (np.clip(values, 0, 65535).astype(np.uint32) * 255 + 32767) // 65535
    return scaled.astype(np.uint8)


def _grey_to_uint8(image: Image.Image) -> np.ndarray:
    """A single-channel image of any depth -> uint8 (H, W): 16-bit and "I" are read as 0..65535,
    "F" as 0..1."""
    if image.mode in SIXTEEN_BIT_MODES or image.mode == "I":
        return _sixteen_bit_to_uint8(np.asarray(image))
    if image.mode == "F":
        return np.rint(np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.asarray(image.convert("L"))


def _to_srgb(image: Image.Image, name: str) -> Image.Image:
    """Convert RGB/CMYK pixels with an embedded ICC profile to sRGB (unreadable profiles are ignored)."""
    icc = image.info.get("icc_profile")
    if not icc or image.mode not in ("RGB", "CMYK"):
        return image
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if image.mode == "RGB" and "srgb" in ImageCms.getProfileDescription(source).lower():
            return image
        return ImageCms.profileToProfile(image, source, _SRGB_PROFILE, outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError) as err:
        logger.warning("%s: ignoring unusable ICC profile (%s)", name, err)
        return image


def _to_rgb_array(image: Image.Image, name: str) -> np.ndarray:
    """Pixels of a decoded image as uint8 (H, W, 3)."""
    mode = image.mode
    if mode in ("RGB", "CMYK"):
        image = _to_srgb(image, name)
    if image.mode in SIXTEEN_BIT_MODES or image.mode in ("I", "F"):
        grey = _grey_to_uint8(image)  # (H, W)
        return np.repeat(grey[..., None], 3, axis=2)
    if image.mode == "LAB":  # Pillow's convert() cannot; littlecms can
        lab = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB"))
        image = ImageCms.applyTransform(image, ImageCms.buildTransform(lab, _SRGB_PROFILE, "LAB", "RGB"))
    if image.mode != "RGB":
        try:
            # RGBA/LA/PA: the alpha is dropped, not composited: the colour under it is the content.
            image = image.convert("RGB")
        except (ValueError, OSError) as err:
            raise ImageError("unreadable", f"{name}: cannot convert mode {mode} to RGB: {err}") from err
    return np.asarray(image, dtype=np.uint8)


def decode_image(data: bytes, name: str = "<bytes>", max_pixels: int | None = None, require_rgb: bool = False) -> np.ndarray:
    """Decode encoded bytes (JPEG, PNG, WebP, TIFF, ...) to uint8 RGB (H, W, 3), EXIF-rotated.

    Conversions: RGBA/LA/PA drop the alpha (no compositing: the colour under the alpha is the
    content); palette -> RGB; grey (1, L, 16-bit I;16 and I read as 0..65535 and scaled to
    0..255, F read as 0..1) -> three equal channels; CMYK -> RGB; RGB or CMYK with an embedded ICC
    profile other than sRGB -> sRGB.

    Args:
        data: the encoded file.
        name: names the item in error messages (a URL or file name).
        max_pixels: width x height above this is rejected before decoding ("too_large");
            None means ``Settings.max_image_pixels``.
        require_rgb: reject sources without colour (grey, 16-bit grey, bilevel, CMYK) with
            reason "not_rgb" instead of converting them.
    """
    image = _open(data, name, max_pixels)
    if require_rgb and image.mode in NON_COLOUR_MODES:
        raise ImageError("not_rgb", f"{name}: mode {image.mode} is not an RGB colour image")
    image = _load(image, name)
    return _to_rgb_array(image, name)


def decode_image_and_alpha(
    data: bytes, name: str = "<bytes>", max_pixels: int | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """``decode_image`` and the image's alpha as float32 (H, W) in [0, 1]; the alpha is None when the
    image has none (or a palette without transparency) or when it is opaque everywhere."""
    image = _load(_open(data, name, max_pixels), name)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    alpha = None
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        channel = np.asarray(image.getchannel("A"))
        if int(channel.min()) < 255:
            alpha = channel.astype(np.float32) / 255.0
    return _to_rgb_array(image, name), alpha


def _alpha_or_luminance(image: Image.Image, name: str) -> np.ndarray:
    """The mask values of a decoded image as float32 (H, W) in [0, 1]."""
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        alpha = np.asarray(image.getchannel("A"))
        if alpha.min() < 255:
            return alpha.astype(np.float32) / 255.0
        image = image.convert("L")
    if image.mode == "1":
        return np.asarray(image, dtype=np.float32)
    if image.mode in SIXTEEN_BIT_MODES or image.mode == "I":
        return (np.clip(np.asarray(image), 0, 65535) / 65535.0).astype(np.float32)
    if image.mode == "F":
        return np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    if image.mode == "LAB":
        return np.asarray(image.getchannel("L"), dtype=np.float32) / 255.0  # L* scaled to 0-255 by Pillow
    try:
        return np.asarray(image.convert("L"), dtype=np.float32) / 255.0  # RGB: ITU-R 601 luma
    except (ValueError, OSError) as err:
        raise ImageError("unreadable", f"{name}: cannot read mode {image.mode} as a mask: {err}") from err


def decode_mask(data: bytes, name: str = "<bytes>", max_pixels: int | None = None) -> np.ndarray:
    """Decode a mask to float32 (H, W) in [0, 1] (1 = foreground), EXIF-rotated like images.

    The alpha channel is the mask when there is one that is not fully opaque; otherwise the
    luminance is (8-bit /255, 16-bit /65535, bilevel 0/1).
    """
    image = _load(_open(data, name, max_pixels), name)
    return _alpha_or_luminance(image, name)


def _read(url: str) -> bytes:
    from ssh_model.storage import read_bytes  # storage pulls fsspec: only when reading URLs

    try:
        return read_bytes(url)
    except Exception as err:  # noqa: BLE001 - every storage failure becomes a typed error naming the URL
        raise storage_error(err, url, error_class=ImageError) from err


def read_image(url: str, max_pixels: int | None = None, require_rgb: bool = False) -> np.ndarray:
    """``decode_image`` of the bytes at an fsspec URL; storage failures raise their reason ("missing",
    "unreachable", "forbidden", "unsupported_url", ...; see ``ssh_model.errors``)."""
    return decode_image(_read(url), url, max_pixels=max_pixels, require_rgb=require_rgb)


def decode_image_with_mask(
    data: bytes, mask_data: bytes | None, name: str, mask_name: str, max_pixels: int | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """(RGB (H, W, 3), float32 (H, W) mask): the mask of ``mask_data`` when given, else the image's own alpha
    (an RGBA cut-out); None when neither (the caller's "no_mask")."""
    image, alpha = decode_image_and_alpha(data, name, max_pixels=max_pixels)
    return image, decode_mask(mask_data, mask_name, max_pixels=max_pixels) if mask_data is not None else alpha


def read_image_with_mask(
    url: str, mask_url: str | None = None, role: str = "composite", max_pixels: int | None = None
) -> tuple[np.ndarray, np.ndarray, str]:
    """(RGB (H, W, 3) of the image at ``url``, its mask as float32 (H, W), how messages name the mask): the mask
    at ``mask_url`` when given, else the image's own alpha (an RGBA cut-out); neither is the "no_mask" error
    naming the image as ``"{role} {url}"``."""
    data = _read(url)
    mask_data = _read(mask_url) if mask_url else None
    image, mask = decode_image_with_mask(data, mask_data, url, mask_url or "", max_pixels)
    image, mask = composite_and_mask(image, mask, f"{role} {url}")
    return image, mask, f"mask {mask_url}" if mask_url else f"the alpha of {url}"


def read_mask(url: str, max_pixels: int | None = None) -> np.ndarray:
    """``decode_mask`` of the bytes at an fsspec URL -> float32 (H, W) in [0, 1]."""
    return decode_mask(_read(url), url, max_pixels=max_pixels)


def output_format(url: str, fallback: str | None = None) -> str | None:
    """The format ``encode_image`` writes for ``url``: from its extension (.png, .jpg/.jpeg, .webp, any case),
    else ``fallback`` (e.g. the input's probed format; MPO counts as JPEG) when it is one of those, else None."""
    extension = posixpath.splitext(url.split("?", 1)[0].rsplit("/", 1)[-1])[1].lower()
    if extension in FORMATS_BY_EXTENSION:
        return FORMATS_BY_EXTENSION[extension]
    fallback = "JPEG" if (fallback or "").upper() == "MPO" else (fallback or "").upper()
    return fallback if fallback in FORMATS_BY_EXTENSION.values() else None


def encode_image(image: np.ndarray, format: str = "PNG", quality: int = 95) -> bytes:
    """Encode uint8 (H, W, 3), (H, W, 1) or (H, W) pixels as PNG, JPEG ("JPG" too) or WEBP.

    Args:
        image: the pixels; (H, W) and (H, W, 1) are written as greyscale.
        format: case-insensitive format name.
        quality: 1-100 for JPEG and WEBP (ignored by PNG, which is lossless).
    """
    kind = ENCODE_FORMATS.get(format.upper())
    if kind is None:
        raise ValueError(f"unsupported output format {format!r}; expected one of {sorted(ENCODE_FORMATS)}")
    if image.dtype != np.uint8:
        raise TypeError(f"expected uint8 pixels, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"expected (H, W, 3), (H, W, 1) or (H, W) pixels, got shape {image.shape}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    buffer = io.BytesIO()
    options: dict[str, object] = {}
    if kind == "JPEG":
        options = {"quality": int(quality), "optimize": True}
    elif kind == "WEBP":
        options = {"quality": int(quality)}
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, kind, **options)
    return buffer.getvalue()


__all__ = [
    "FORMATS_BY_EXTENSION",
    "IMAGE_EXTENSIONS",
    "REASONS",
    "ImageError",
    "ImageInfo",
    "decode_image",
    "decode_image_and_alpha",
    "decode_image_with_mask",
    "decode_mask",
    "encode_image",
    "output_format",
    "probe_image",
    "read_image",
    "read_image_with_mask",
    "read_mask",
]
