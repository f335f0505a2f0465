"""3D colour LUTs: the ``LUT`` type, ``.cube`` files, and applying LUTs to images.

Generated grades (``random_lut``, ``lut_bank``) live in ``ssh_model.lut_generator`` and are
re-exported here.

Table layout (everywhere in this project): float32 ``(N, N, N, 3)`` indexed ``[b, g, r]``, so a
C-order flatten lists the entries in ``.cube`` row order (red varies fastest, then green, then
blue) -- which is also the order Pillow's ``Color3DLUT`` expects ("channels change first, then the
first dimension (red), then the second, then the third").

``.cube`` (Adobe / DaVinci Resolve 3D format): ``TITLE "..."``, ``LUT_3D_SIZE N`` (2..256),
``DOMAIN_MIN``/``DOMAIN_MAX`` (or Resolve's ``LUT_3D_INPUT_RANGE lo hi``), ``#`` comments and blank
lines, then N**3 rows of three numbers. 1D LUTs are rejected. Unknown keywords are ignored with a
warning. Inputs outside the domain are clamped to it; outputs are clipped to [0, 1] when applied.

Applying: ``apply_lut`` (uint8 images, Pillow's C trilinear filter, horizontal strips in a small
thread pool -- Pillow releases the GIL), ``apply_lut_torch`` (float tensors, ``grid_sample``,
differentiable, batched) and ``apply_lut_reference`` (float64 numpy trilinear, the ground truth
for tests and benchmarks). They agree within one 8-bit level.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageFilter

from ssh_model import storage
from ssh_model.lut_generator import bank_seed, lut_bank, random_lut  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

PILLOW_MAX_SIZE = 65  # Color3DLUT's largest grid; bigger tables are resampled for Pillow
CUBE_MAX_SIZE = 256
CUBE_DECIMALS = 6
STRIP_MIN_PIXELS = 512 * 512  # smaller images are filtered in one call (threads would not pay off)
UNIT_DOMAIN = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)


class CubeFormatError(ValueError):
    """A malformed ``.cube`` file; the message names the source and the line number."""


@dataclass(frozen=True, eq=False)
class LUT:
    """A 3D colour lookup table.

    Args:
        table: (N, N, N, 3) output colours indexed ``[b, g, r]`` (stored as a read-only float32 copy).
        title: free text (the ``.cube`` TITLE; generated grades list their recipe here).
        domain_min: the input colour at grid index 0, per channel (r, g, b).
        domain_max: the input colour at grid index N - 1, per channel.
        name: a stable id, e.g. ``gen-s7-i12`` or the ``.cube`` file stem.
    """

    table: np.ndarray = field(repr=False)
    title: str = ""
    domain_min: tuple[float, float, float] = UNIT_DOMAIN[0]
    domain_max: tuple[float, float, float] = UNIT_DOMAIN[1]
    name: str = ""

    def __post_init__(self) -> None:
        table = np.array(self.table, dtype=np.float32, order="C")  # a copy: nobody else can mutate it
        n = table.shape[0] if table.ndim == 4 else 0
        if table.ndim != 4 or table.shape != (n, n, n, 3) or not 2 <= n <= CUBE_MAX_SIZE:
            raise ValueError(f"LUT table must be (N, N, N, 3) with 2 <= N <= {CUBE_MAX_SIZE}, got {table.shape}")
        if not np.isfinite(table).all():
            raise ValueError("LUT table holds non-finite values")
        table.setflags(write=False)
        low = tuple(float(v) for v in self.domain_min)
        high = tuple(float(v) for v in self.domain_max)
        if len(low) != 3 or len(high) != 3 or not all(lo < hi for lo, hi in zip(low, high, strict=True)):
            raise ValueError(f"LUT domain must be 3 values per end with min < max, got {low} .. {high}")
        object.__setattr__(self, "table", table)
        object.__setattr__(self, "domain_min", low)
        object.__setattr__(self, "domain_max", high)

    @property
    def size(self) -> int:
        return int(self.table.shape[0])

    @property
    def has_unit_domain(self) -> bool:
        return (self.domain_min, self.domain_max) == UNIT_DOMAIN

    def normalized(self, size: int | None = None) -> LUT:
        """The same grade on the [0, 1] domain (and on a ``size`` grid), resampled trilinearly."""
        size = self.size if size is None else size
        if self.has_unit_domain and size == self.size:
            return self
        grid = identity_grid(size).reshape(-1, 3).astype(np.float64)
        table = _trilinear(self.table, self._grid_coordinates(grid)).reshape(size, size, size, 3)
        return replace(self, table=table, domain_min=UNIT_DOMAIN[0], domain_max=UNIT_DOMAIN[1])

    def _grid_coordinates(self, rgb: np.ndarray) -> np.ndarray:
        """Input colours (..., 3) in [0, 1] -> fractional grid positions (..., 3), clamped to the grid."""
        low, high = np.asarray(self.domain_min), np.asarray(self.domain_max)
        return np.clip((rgb - low) / (high - low), 0.0, 1.0) * (self.size - 1)

    @cached_property
    def pillow_filter(self) -> ImageFilter.Color3DLUT:
        """Pillow's filter for this LUT (built once; [0, 1] domain, at most 65 grid points)."""
        unit = self.normalized(min(self.size, PILLOW_MAX_SIZE))
        return ImageFilter.Color3DLUT(unit.size, unit.table.reshape(-1), _copy_table=False)


def identity_grid(size: int) -> np.ndarray:
    """float32 (N, N, N, 3) indexed [b, g, r] holding (r, g, b) on the unit grid."""
    axis = np.linspace(0.0, 1.0, size, dtype=np.float64)
    b, g, r = np.meshgrid(axis, axis, axis, indexing="ij")
    return np.stack([r, g, b], axis=-1).astype(np.float32)


def identity_lut(size: int = 33) -> LUT:
    return LUT(identity_grid(size), title="identity", name="identity")


# -- .cube files -------------------------------------------------------------------------------------

_KEYWORD = re.compile(r"[A-Z][A-Z0-9_]*")
_TITLE = re.compile(r"TITLE(\s|$)")


def _floats(parts: list[str], count: int, what: str, where: str) -> tuple[float, ...]:
    if len(parts) != count:
        raise CubeFormatError(f"{where}: {what} needs {count} numbers, got {len(parts)}")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise CubeFormatError(f"{where}: {what}: not a number in {' '.join(parts)!r}") from None
    if not all(np.isfinite(values)):
        raise CubeFormatError(f"{where}: {what}: non-finite value in {' '.join(parts)!r}")
    return values


def parse_cube(text: str, source: str = "<string>") -> LUT:
    """Parse ``.cube`` text; the LUT's name is left empty (``read_cube`` sets the file stem)."""
    lines = text.removeprefix("\ufeff").splitlines()
    title, size, size_line, domain_line = "", None, 0, 0
    low, high = UNIT_DOMAIN
    first_row = len(lines)
    for index, raw in enumerate(lines):  # the header: keywords up to the first table row
        where = f"{source}, line {index + 1}"
        line = raw.strip()
        if _TITLE.match(line):
            rest = line[5:].strip()
            title = rest[1 : rest.rindex('"')] if rest.startswith('"') and rest.count('"') >= 2 else rest
            continue
        parts = line.split("#", 1)[0].split()
        if not parts:
            continue
        keyword = parts[0]
        if not _KEYWORD.fullmatch(keyword):
            first_row = index
            break
        if keyword.startswith("LUT_1D"):
            raise CubeFormatError(f"{where}: {keyword}: this is a 1D LUT; only 3D LUTs (LUT_3D_SIZE) are supported")
        if keyword == "LUT_3D_SIZE":
            if size is not None:
                raise CubeFormatError(f"{where}: LUT_3D_SIZE given twice (first on line {size_line})")
            if len(parts) != 2 or not parts[1].isdigit() or not 2 <= int(parts[1]) <= CUBE_MAX_SIZE:
                raise CubeFormatError(
                    f"{where}: LUT_3D_SIZE must be one integer in 2..{CUBE_MAX_SIZE}, got {' '.join(parts[1:])!r}"
                )
            size, size_line = int(parts[1]), index + 1
        elif keyword in ("DOMAIN_MIN", "DOMAIN_MAX"):
            values = _floats(parts[1:], 3, keyword, where)
            low, high = (values, high) if keyword == "DOMAIN_MIN" else (low, values)
            domain_line = index + 1
        elif keyword == "LUT_3D_INPUT_RANGE":
            lo, hi = _floats(parts[1:], 2, keyword, where)
            low, high, domain_line = (lo, lo, lo), (hi, hi, hi), index + 1
        else:
            log.warning("%s: ignoring unsupported keyword %s", where, keyword)
    if size is None:
        where = f"{source}, line {min(first_row + 1, len(lines))}"
        if first_row < len(lines):
            raise CubeFormatError(f"{where}: table data before LUT_3D_SIZE (a 3D .cube needs LUT_3D_SIZE N)")
        raise CubeFormatError(f"{where}: no LUT_3D_SIZE in the file (not a 3D .cube LUT)")
    if not all(lo < hi for lo, hi in zip(low, high, strict=True)):
        raise CubeFormatError(
            f"{source}, line {domain_line}: DOMAIN_MIN {low} must be below DOMAIN_MAX {high} in every channel"
        )
    table = _parse_rows(lines, first_row, size, source)
    return LUT(table.reshape(size, size, size, 3), title=title, domain_min=low, domain_max=high)


def _parse_rows(lines: list[str], first: int, size: int, source: str) -> np.ndarray:
    """The N**3 table rows in ``lines[first:]`` (numpy's C parser; on any doubt a line-by-line scan that
    names the line at fault)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "input contained no data"
            values = np.loadtxt(lines[first:], dtype=np.float64, comments="#", ndmin=2)
        if values.shape == (size**3, 3) and np.isfinite(values).all():
            return values
    except ValueError:
        pass
    rows: list[tuple[float, ...]] = []
    for index in range(first, len(lines)):
        where = f"{source}, line {index + 1}"
        parts = lines[index].split("#", 1)[0].split()
        if not parts:
            continue
        if _KEYWORD.fullmatch(parts[0]):
            raise CubeFormatError(f"{where}: keyword {parts[0]} after the table data")
        if len(rows) == size**3:
            raise CubeFormatError(f"{where}: more than LUT_3D_SIZE**3 = {size**3} table rows")
        rows.append(_floats(parts, 3, "a table row", where))
    if len(rows) != size**3:
        raise CubeFormatError(
            f"{source}, line {len(lines)}: expected LUT_3D_SIZE**3 = {size**3} table rows, found {len(rows)}"
        )
    return np.asarray(rows, dtype=np.float64)


def format_cube(lut: LUT) -> str:
    """``.cube`` text for ``lut`` (values with 6 decimals; parsing it back is exact to that precision)."""
    title = " ".join(lut.title.replace('"', "'").split())
    header = ["# Written by ssh-harmonization (ssh_model.lut)"]
    if title:
        header.append(f'TITLE "{title}"')
    header.append(f"LUT_3D_SIZE {lut.size}")
    if not lut.has_unit_domain:
        header.append("DOMAIN_MIN " + " ".join(f"{v:.{CUBE_DECIMALS}f}" for v in lut.domain_min))
        header.append("DOMAIN_MAX " + " ".join(f"{v:.{CUBE_DECIMALS}f}" for v in lut.domain_max))
    values = np.round(lut.table.reshape(-1, 3).astype(np.float64), CUBE_DECIMALS) + 0.0  # -0.0 -> 0.0
    row = f"%.{CUBE_DECIMALS}f %.{CUBE_DECIMALS}f %.{CUBE_DECIMALS}f"
    return "\n".join(header) + "\n\n" + "\n".join(row % tuple(v) for v in values.tolist()) + "\n"


def _stem(url: str) -> str:
    base = posixpath.basename(url.rstrip("/"))
    return base[:-5] if base.lower().endswith(".cube") else base


def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        if b"\0" in data:
            raise CubeFormatError(f"{source}, line 1: binary data, not a text .cube file") from None
        return data.decode("latin-1")  # old tools write titles in latin-1


def read_cube(url: str) -> LUT:
    """Read a ``.cube`` file from any URL; the LUT is named after the file stem."""
    lut = parse_cube(_decode(storage.read_bytes(url), url), source=url)
    return replace(lut, name=_stem(url))


def write_cube(lut: LUT, url: str) -> None:
    storage.write_bytes_atomic(url, format_cube(lut).encode("utf-8"))


def read_cube_folder(url: str) -> list[LUT]:
    """Every ``*.cube`` under ``url`` (recursively), sorted by name (the path below ``url``, no suffix)."""
    fs, root = storage.filesystem(url)
    if not fs.exists(root):
        raise FileNotFoundError(f"no LUT folder at {url}")
    root = root.rstrip("/")
    paths = sorted(p for p in fs.find(root) if p.lower().endswith(".cube") and not posixpath.basename(p).startswith("."))
    blobs = fs.cat(paths) if paths else {}  # one batched request on object stores
    luts = []
    for path in paths:
        source = storage.join(url, path[len(root) + 1 :])
        lut = parse_cube(_decode(blobs[path], source), source=source)
        luts.append(replace(lut, name=path[len(root) + 1 : -5]))
    return sorted(luts, key=lambda lut: lut.name)


# -- applying ----------------------------------------------------------------------------------------

MAX_THREADS = 4
_pool: ThreadPoolExecutor | None = None
_pool_pid = 0
_pool_lock = threading.Lock()


def _thread_pool_size() -> int:
    """One strip worker per usable core, at most ``MAX_THREADS``."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(MAX_THREADS, cores))


def _thread_pool() -> ThreadPoolExecutor:
    """The shared strip workers (``MAX_THREADS`` threads, idle when unused); recreated after a fork."""
    global _pool, _pool_pid
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool, _pool_pid = ThreadPoolExecutor(MAX_THREADS, thread_name_prefix="apply-lut"), os.getpid()
        return _pool


def check_image(image: np.ndarray, what: str = "image") -> np.ndarray:
    """``image`` as a C-contiguous uint8 (H, W, 3) array, or a ValueError/TypeError saying what is wrong."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{what} must be a numpy uint8 (H, W, 3) array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8 (H, W, 3), got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{what} must be (H, W, 3) RGB, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{what} is empty: shape {image.shape}")
    return np.ascontiguousarray(image)


def apply_lut(image: np.ndarray, lut: LUT, threads: int | None = None) -> np.ndarray:
    """Grade a uint8 (H, W, 3) RGB image with ``lut`` (trilinear); returns a new uint8 (H, W, 3) array.

    Large images are cut into horizontal strips filtered concurrently (``threads``: strips at once,
    default one per core, at most 4); the result does not depend on the cut.
    """
    image = check_image(image)
    flt = lut.pillow_filter
    height, width = image.shape[:2]
    workers = _thread_pool_size() if threads is None else max(1, threads)
    if workers == 1 or height * width < STRIP_MIN_PIXELS or height < 2 * workers:
        return np.asarray(Image.fromarray(image).filter(flt))
    out = np.empty_like(image)
    bounds = np.linspace(0, height, 2 * workers + 1).round().astype(int)  # 2 strips a worker: load balance

    def grade(start: int, stop: int) -> None:
        out[start:stop] = np.asarray(Image.fromarray(image[start:stop]).filter(flt))

    pool = _thread_pool()
    futures = [pool.submit(grade, int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    for future in futures:
        future.result()
    return out


def _trilinear(table: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Trilinear lookup (float64) of ``table`` (N, N, N, 3) [b, g, r] at grid positions ``coords`` (..., 3).

    ``coords`` are fractional grid indices in (r, g, b) order, within [0, N - 1].
    """
    n = table.shape[0]
    lut = table.astype(np.float64)
    base = np.clip(np.floor(coords), 0, n - 2).astype(np.intp)
    frac = coords - base
    r0, g0, b0 = base[..., 0], base[..., 1], base[..., 2]
    fr, fg, fb = frac[..., 0:1], frac[..., 1:2], frac[..., 2:3]
    out = np.zeros(coords.shape[:-1] + (3,))
    for db, wb in ((0, 1 - fb), (1, fb)):
        for dg, wg in ((0, 1 - fg), (1, fg)):
            for dr, wr in ((0, 1 - fr), (1, fr)):
                out += wb * wg * wr * lut[b0 + db, g0 + dg, r0 + dr]
    return out


def apply_lut_reference(image: np.ndarray, lut: LUT) -> np.ndarray:
    """The exact trilinear result: float64 (H, W, 3) in [0, 255], unrounded. Slow; for tests, benchmarks."""
    image = check_image(image)
    coords = lut._grid_coordinates(image.astype(np.float64) / 255.0)
    return np.clip(_trilinear(lut.table, coords), 0.0, 1.0) * 255.0


def luts_to_tensor(luts: Sequence[LUT]) -> torch.Tensor:
    """float32 (B, N, N, N, 3) tables for ``apply_lut_torch``: [0, 1] domain, all on the first LUT's grid."""
    import torch  # deferred: LUT files and Pillow grading (the CLI, ingest) must not pay for importing torch

    if not luts:
        raise ValueError("luts_to_tensor needs at least one LUT")
    size = luts[0].size
    return torch.from_numpy(np.stack([lut.normalized(size).table for lut in luts]))


def apply_lut_torch(images: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
    """Grade float images in [0, 1] with [0, 1]-domain LUT tables, trilinear and differentiable.

    Args:
        images: (B, 3, H, W) float RGB in [0, 1] (values outside are clamped to the grid).
        tables: (B, N, N, N, 3) one table per image, or (N, N, N, 3) for all, indexed [b, g, r]
            (``luts_to_tensor([lut, ...])``).

    Returns:
        (B, 3, H, W) in [0, 1], same dtype and device as ``images``.
    """
    import torch  # deferred, as in luts_to_tensor
    import torch.nn.functional as F

    if not torch.is_floating_point(images) or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be a float (B, 3, H, W) tensor, got {images.dtype} {tuple(images.shape)}")
    n = tables.shape[-2] if tables.dim() >= 4 else 0
    if tables.dim() not in (4, 5) or tuple(tables.shape[-4:]) != (n, n, n, 3) or n < 2:
        raise ValueError(f"tables must be (B, N, N, N, 3) or (N, N, N, 3), got {tuple(tables.shape)}")
    batch = images.shape[0]
    if tables.dim() == 5 and tables.shape[0] != batch:
        raise ValueError(f"{tables.shape[0]} tables for {batch} images")
    tables = tables.to(device=images.device, dtype=images.dtype)
    grid = images.permute(0, 2, 3, 1) * 2.0 - 1.0  # (B, H, W, 3) as (x=r, y=g, z=b) in [-1, 1]
    if tables.dim() == 4:  # one volume, every image as one depth slice of a single grid
        volume = tables.permute(3, 0, 1, 2).unsqueeze(0)  # (1, 3, N_b, N_g, N_r)
        out = F.grid_sample(
            volume, grid.unsqueeze(0), mode="bilinear", padding_mode="border", align_corners=True
        )  # (1, 3, B, H, W)
        out = out[0].transpose(0, 1)  # (B, 3, H, W)
    else:
        volume = tables.permute(0, 4, 1, 2, 3)  # (B, 3, N_b, N_g, N_r)
        out = F.grid_sample(volume, grid.unsqueeze(1), mode="bilinear", padding_mode="border", align_corners=True)[
            :, :, 0
        ]  # (B, 3, H, W)
    return out.clamp(0.0, 1.0)
