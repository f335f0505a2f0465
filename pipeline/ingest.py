"""Ingest natural photos: sources -> an image manifest, a rejects table and a copy of every accepted photo.

Layout under the data root (any fsspec URL):

    images/manifest.parquet   one row per distinct photo (MANIFEST_SCHEMA), sorted by id
    images/rejects.parquet    one row per source URL that could not be used (REJECTS_SCHEMA), sorted by URL
    images/blobs/{id}.{ext}   the photo's exact bytes

Choices:
- The id is the sha256 of the file's bytes: the same photo under two URLs is ingested once (the
  other URL lands in rejects as ``duplicate``, naming the kept id).
- The split is a function of the id (``split_of``): ~90 % train, 5 % val, 5 % test, and it never
  changes when more photos arrive.
- The bytes are copied to ``images/blobs`` so later stages never depend on sources that move or
  vanish; the manifest keeps the source URL for provenance.
- Incremental: URLs already in the manifest are not read again (a URL is assumed to keep its
  content; publish changed photos under new URLs). Everything else is read, so rejects are
  retried and a grown source adds only its new photos. The tables are rewritten only when their
  rows change, so a re-run over the same sources leaves both files byte-for-byte as they were.
- Reads run in a bounded thread pool; one bad file only adds a reject. Accepted photos are fully
  decoded once (catching truncated files) and must be colour (RGB, not grayscale or CMYK), at most
  ``max_image_pixels`` (checked from the header, before decoding) and at least ``min_image_side``.
- One ingest per data root at a time (the tables are replaced, not merged, by each run).

Reject reasons: ``missing`` (no such object), ``unreadable`` (not an image, corrupt, or the
storage failed), ``empty`` (zero bytes), ``truncated``, ``too_large`` (over the pixel limit),
``too_small``, ``not_rgb`` (grayscale, CMYK, ...), ``unsupported`` (not JPEG, PNG or WebP),
``duplicate`` (the same bytes as a photo already in the manifest).
"""

from __future__ import annotations

import hashlib
import io
import logging
import posixpath
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ssh_model import storage
from ssh_model.images import IMAGE_EXTENSIONS, ImageError, decode_image, probe_image
from ssh_model.progress import progress_line
from ssh_model.samples import BUILTIN_SAMPLES_URL, sample_photo_paths
from ssh_model.settings import get_settings

logger = logging.getLogger(__name__)

MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False, metadata={"doc": "sha256 hex of the photo's bytes"}),
        pa.field("source_url", pa.string(), nullable=False, metadata={"doc": "where the photo was first found"}),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("format", pa.string(), nullable=False, metadata={"doc": "JPEG | PNG | WEBP"}),
        pa.field("bytes", pa.int64(), nullable=False, metadata={"doc": "file size"}),
        pa.field("split", pa.string(), nullable=False, metadata={"doc": "train | val | test, from the id"}),
        pa.field(
            "blob", pa.string(), nullable=False, metadata={"doc": "the copy of the bytes, relative to the images/ folder"}
        ),
    ]
)
REJECTS_SCHEMA = pa.schema(
    [
        pa.field("url", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string(), nullable=False),
    ]
)
FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
FORMAT_ALIASES = {"MPO": "JPEG"}  # multi-picture JPEGs (cameras, phones): the first picture is the photo
GLOB_CHARACTERS = "*?["


def split_of(image_id: str) -> str:
    """train (90 %), val (5 %) or test (5 %), a fixed function of the content hash."""
    bucket = int(image_id[:8], 16) % 100
    return "train" if bucket < 90 else "val" if bucket < 95 else "test"


def images_url(data_root: str, *parts: str) -> str:
    return storage.join(data_root, "images", *parts)


def photo_urls(data_root: str, split: str, limit: int | None = None) -> list[str]:
    """URLs of the stored copies of the ingested photos of ``split`` (the first ``limit`` by id); none when
    nothing was ingested under ``data_root``."""
    manifest = read_table(images_url(data_root, "manifest.parquet"), MANIFEST_SCHEMA)
    rows = sorted(manifest.select(["id", "split", "blob"]).to_pylist(), key=lambda r: r["id"])
    return [images_url(data_root, row["blob"]) for row in rows if row["split"] == split][:limit]


# -- listing ----------------------------------------------------------------------------------------


def builtin_urls() -> list[str]:
    """``builtin://samples/<file>`` for each colour photo bundled with scikit-image and scikit-learn."""
    return [f"{BUILTIN_SAMPLES_URL}/{Path(path).name}" for path in sample_photo_paths()]


def _builtin_path(url: str) -> str:
    name = url[len(BUILTIN_SAMPLES_URL) + 1 :]
    for path in sample_photo_paths():
        if Path(path).name == name:
            return path
    raise FileNotFoundError(f"{url}: no bundled sample photo named {name!r}")


def _is_image_name(path: str) -> bool:
    name = posixpath.basename(path)
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def expand_source(source: str) -> list[str]:
    """The photo URLs a source names: itself (a file, even a missing one: it becomes a reject), the
    images under a folder (recursively, by extension), the files a glob matches, or the bundled samples."""
    if source.rstrip("/") == BUILTIN_SAMPLES_URL:
        return builtin_urls()
    if source.startswith(BUILTIN_SAMPLES_URL + "/"):
        return [source]
    fs, path = storage.filesystem(source)
    remote = "://" in source

    def url_of(found: str) -> str:
        return fs.unstrip_protocol(found) if remote else found

    if any(char in path for char in GLOB_CHARACTERS):
        return sorted(url_of(p) for p in fs.glob(path) if fs.isfile(p))
    if fs.isdir(path):
        return sorted(url_of(p) for p in fs.find(path) if _is_image_name(p))
    return [source]


def expand_sources(sources: Iterable[str]) -> tuple[list[str], list[dict[str, str]]]:
    """Every photo URL of ``sources`` once, in order; and a reject for each glob that matched nothing."""
    urls: dict[str, None] = {}
    rejects = []
    for source in sources:
        found = expand_source(source)
        if not found:
            rejects.append({"url": source, "reason": "missing", "detail": "the source matched no files"})
        urls.update(dict.fromkeys(found))
    return list(urls), rejects


# -- one photo --------------------------------------------------------------------------------------


class Rejected(Exception):
    """A source URL that cannot be used, with its reason (see the module docstring)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def read_source(url: str) -> bytes:
    """The bytes at ``url`` (``builtin://samples/...`` included); ``Rejected`` when unavailable."""
    try:
        if url.startswith(BUILTIN_SAMPLES_URL + "/"):
            return Path(_builtin_path(url)).read_bytes()
        return storage.read_bytes(url)
    except FileNotFoundError as err:
        raise Rejected("missing", f"no such file or object ({err.__class__.__name__})") from err
    except (OSError, ValueError) as err:
        raise Rejected("unreadable", f"cannot read: {err.__class__.__name__}: {err}"[:300]) from err


def inspect_photo(url: str, data: bytes, max_pixels: int, min_side: int) -> dict:
    """The manifest row for a photo's bytes; ``Rejected`` when it is not a usable colour photo."""
    if not data:
        raise Rejected("empty", "zero bytes")
    try:
        info = probe_image(data, url, max_pixels)
        image_format = FORMAT_ALIASES.get(info.format, info.format)
        if image_format not in FORMATS:
            raise Rejected("unsupported", f"format {info.format} is not one of {', '.join(FORMATS)}")
        image = decode_image(data, url, max_pixels=max_pixels, require_rgb=True)  # (H, W, 3): every pixel
    except ImageError as err:
        raise Rejected(err.reason, str(err)[:300]) from err
    height, width = image.shape[:2]  # as later stages see it (EXIF orientation applied)
    if min(width, height) < min_side:
        raise Rejected("too_small", f"{width}x{height}, the shorter side is under {min_side} px")
    image_id = hashlib.sha256(data).hexdigest()
    return {
        "id": image_id,
        "source_url": url,
        "width": int(width),
        "height": int(height),
        "format": image_format,
        "bytes": len(data),
        "split": split_of(image_id),
        "blob": f"blobs/{image_id}.{FORMATS[image_format]}",
    }


@dataclass
class Outcome:
    """What reading one URL gave: a manifest row, or a reject."""

    url: str
    row: dict | None = None
    reason: str = ""
    detail: str = ""


def ingest_one(url: str, data_root: str, max_pixels: int, min_side: int) -> Outcome:
    """Read, check and copy one photo (the blob is written before the manifest ever names it)."""
    try:
        data = read_source(url)
        row = inspect_photo(url, data, max_pixels, min_side)
    except Rejected as rejected:
        return Outcome(url, reason=rejected.reason, detail=rejected.detail)
    except Exception as err:  # a decoder failing in an unforeseen way: still only this file's problem
        return Outcome(url, reason="unreadable", detail=f"{err.__class__.__name__}: {err}"[:300])
    blob = images_url(data_root, row["blob"])
    if not storage.exists(blob):
        storage.write_bytes_atomic(blob, data)
    return Outcome(url, row=row)


# -- the tables -------------------------------------------------------------------------------------


def read_table(url: str, schema: pa.Schema) -> pa.Table:
    """The table at ``url`` (with ``schema``), or an empty one when it does not exist yet."""
    if not storage.exists(url):
        return schema.empty_table()
    return pq.read_table(io.BytesIO(storage.read_bytes(url)), schema=schema)


def table_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def write_if_changed(url: str, table: pa.Table, previous: pa.Table) -> bool:
    """Write ``table`` to ``url`` unless it has exactly the previous rows (keeps re-runs byte-for-byte)."""
    if storage.exists(url) and table.equals(previous):
        return False
    storage.write_bytes_atomic(url, table_bytes(table))
    return True


@dataclass
class IngestSummary:
    sources: list[str]
    listed: int = 0
    skipped_known: int = 0
    added: int = 0
    rejected: int = 0
    images: int = 0
    splits: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    manifest_url: str = ""
    rejects_url: str = ""
    manifest_written: bool = False
    rejects_written: bool = False
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def merge_outcomes(
    manifest: pa.Table, rejects: pa.Table, outcomes: Sequence[Outcome], attempted: Iterable[str]
) -> tuple[pa.Table, pa.Table]:
    """New manifest and rejects tables: known rows kept, new distinct photos added (first URL wins),
    rejects replaced for every URL read this run (a URL that now succeeds leaves the rejects)."""
    rows = {row["id"]: row for row in manifest.to_pylist()}
    new_rejects: dict[str, dict] = {}
    for outcome in outcomes:  # in listing order, so the first URL of a duplicated photo wins
        if outcome.row is None:
            new_rejects[outcome.url] = {"url": outcome.url, "reason": outcome.reason, "detail": outcome.detail}
        elif outcome.row["id"] in rows:
            kept = rows[outcome.row["id"]]
            if kept["source_url"] != outcome.url:
                new_rejects[outcome.url] = {
                    "url": outcome.url,
                    "reason": "duplicate",
                    "detail": f"same bytes as {kept['id']} ({kept['source_url']})",
                }
        else:
            rows[outcome.row["id"]] = outcome.row
    attempted = set(attempted) | set(new_rejects)
    kept_rejects = {r["url"]: r for r in rejects.to_pylist() if r["url"] not in attempted}
    kept_rejects.update(new_rejects)
    manifest_out = pa.Table.from_pylist([rows[k] for k in sorted(rows)], schema=MANIFEST_SCHEMA)
    rejects_out = pa.Table.from_pylist([kept_rejects[k] for k in sorted(kept_rejects)], schema=REJECTS_SCHEMA)
    return manifest_out, rejects_out


def read_all(
    urls: Sequence[str],
    data_root: str,
    max_pixels: int,
    min_side: int,
    max_workers: int,
    progress_every_s: float = 5.0,
    log: logging.Logger | logging.LoggerAdapter = logger,
) -> list[Outcome]:
    """``ingest_one`` over ``urls`` in a pool of at most ``max_workers`` threads, with a progress line."""
    if not urls:
        return []
    started = last = time.monotonic()
    outcomes: list[Outcome] = []
    counts: Counter[str] = Counter()
    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(urls)))) as pool:
        for outcome in pool.map(lambda u: ingest_one(u, data_root, max_pixels, min_side), urls):
            outcomes.append(outcome)
            counts["ok" if outcome.row is not None else "rejected"] += 1
            now = time.monotonic()
            if now - last >= progress_every_s or len(outcomes) == len(urls):
                last = now
                log.info(
                    "ingest: %s (%d ok, %d rejected)",
                    progress_line(len(outcomes), len(urls), now - started, "photos"),
                    counts["ok"],
                    counts["rejected"],
                )
    return outcomes


def ingest_photos(
    urls: Sequence[str],
    data_root: str,
    empty_sources: Sequence[dict[str, str]] = (),
    *,
    max_workers: int,
    sources: Sequence[str] = (),
    log: logging.Logger | logging.LoggerAdapter = logger,
) -> IngestSummary:
    """Read the new URLs, copy the good photos, and update the manifest and rejects tables."""
    settings = get_settings()
    started = time.monotonic()
    manifest_url = images_url(data_root, "manifest.parquet")
    rejects_url = images_url(data_root, "rejects.parquet")
    manifest, rejects = read_table(manifest_url, MANIFEST_SCHEMA), read_table(rejects_url, REJECTS_SCHEMA)
    known = set(manifest.column("source_url").to_pylist())
    todo = [url for url in urls if url not in known]
    log.info("%d URLs already in the manifest, %d to read (%d threads)", len(urls) - len(todo), len(todo), max_workers)
    outcomes = read_all(todo, data_root, settings.max_image_pixels, settings.min_image_side, max_workers, log=log)
    outcomes += [Outcome(r["url"], reason=r["reason"], detail=r["detail"]) for r in empty_sources]
    new_manifest, new_rejects = merge_outcomes(manifest, rejects, outcomes, [*todo, *sources])
    summary = IngestSummary(
        sources=list(sources),
        listed=len(urls),
        skipped_known=len(urls) - len(todo),
        added=new_manifest.num_rows - manifest.num_rows,
        manifest_url=manifest_url,
        rejects_url=rejects_url,
        images=new_manifest.num_rows,
    )
    # The manifest last: a photo it names always has its blob, and rejects never refer to a newer manifest.
    summary.rejects_written = write_if_changed(rejects_url, new_rejects, rejects)
    summary.manifest_written = write_if_changed(manifest_url, new_manifest, manifest)
    summary.rejected = new_rejects.num_rows
    summary.splits = dict(sorted(Counter(new_manifest.column("split").to_pylist()).items()))
    summary.reasons = dict(sorted(Counter(new_rejects.column("reason").to_pylist()).items()))
    summary.seconds = round(time.monotonic() - started, 3)
    log.info(
        "manifest: %d photos (+%d) %s; rejects: %d %s",
        summary.images,
        summary.added,
        summary.splits,
        summary.rejected,
        summary.reasons,
    )
    return summary
