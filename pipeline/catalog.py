"""Catalogs for the bulk harmonization job: read, place outputs under one prefix, validate before any image is read.

A catalog is a Parquet, CSV or JSONL table (the format comes from the file's extension) with one
row per composite:

    id          unique, non-empty
    composite   URL of the composite image
    mask        URL of the foreground mask (same size as the composite; soft values are blend weights);
                optional: a row without one uses the composite's alpha (an RGBA cut-out over its background)
    background  optional: URL of a clean background photo (the harmonization reference)
    reference_mask  optional: URL of a mask of the part of the background to match (of the background
                photo's size when the row has one, else of the composite's)
    target      optional: URL of the ground truth; metrics are computed when present
    output      optional: where to write the result, relative to the output prefix (``shots/a.jpg``) or
                an absolute URL under it; it must end in .jpg, .jpeg, .png or .webp. Rows without
                one get ``<output prefix>/<id><the composite's extension>`` (``.png`` when the
                composite's format cannot be written, e.g. TIFF)

Every output lies under one prefix: ``output_prefix`` when given, else ``default_output_prefix``:
``{data_root}/harmonized/{catalog file stem}`` (``SSH_DATA_ROOT``; never inferred from the rows).
The results table, report and fragments go to ``<prefix>/_results/``, which no output may enter.
A row whose output contains ``..``, leaves the prefix (another bucket, another folder, a symbolic
link out of it) or has no image extension is refused alone: it keeps ``output_refused`` and the
job records it as an ``unsafe_output`` error without reading or writing anything for it.

Relative input URLs are resolved against the catalog's own folder. Catalog-wide problems (missing
columns, no rows, empty or duplicate ids, empty composite cells, an output that is an input,
two rows with one output) are reported at once, in a single ``CatalogError`` listing the offending
rows, before any image is read.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import posixpath
from collections import defaultdict
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from ssh_model.errors import redact, storage_error
from ssh_model.images import IMAGE_EXTENSIONS
from ssh_model.settings import get_settings
from ssh_model.storage import is_under, join, read_bytes, write_bytes_atomic

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("id", "composite")
OPTIONAL_COLUMNS = ("mask", "background", "reference_mask", "target", "output")
INPUT_COLUMNS = ("composite", "mask", "background", "reference_mask", "target")
RESULTS_DIRNAME = "_results"  # reserved folder under the output prefix: results table, report, fragments
DEFAULT_OUTPUT_DIRNAME = "harmonized"  # the default prefix is {data_root}/harmonized/{catalog file stem}
MAX_LISTED_PROBLEMS = 50
FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}


class CatalogError(ValueError):
    """A catalog that cannot be run; ``problems`` lists every offending row (or the missing columns)."""

    def __init__(self, url: str, problems: list[str]) -> None:
        self.url = url
        self.problems = problems
        listed = problems[:MAX_LISTED_PROBLEMS]
        more = f"\n  ... and {len(problems) - len(listed)} more" if len(problems) > len(listed) else ""
        plural = "s" if len(problems) != 1 else ""
        super().__init__(
            f"catalog {url} is invalid ({len(problems)} problem{plural}; no image was read):\n  "
            + "\n  ".join(listed)
            + more
        )


@dataclass(frozen=True)
class CatalogRow:
    id: str
    composite: str
    mask: str | None  # None: the composite's alpha is the mask
    output: str
    background: str | None = None
    reference_mask: str | None = None
    target: str | None = None
    output_refused: str | None = None  # why ``output`` may not be written: the row fails alone (unsafe_output)


@dataclass(frozen=True)
class Catalog:
    url: str
    rows: list[CatalogRow]
    output_prefix: str  # every output is under it (``normalized``); results and report go to ``results_dir``
    has_background: bool
    has_target: bool

    @property
    def results_dir(self) -> str:
        return join(self.output_prefix, RESULTS_DIRNAME)

    def __len__(self) -> int:
        return len(self.rows)


def catalog_format(url: str) -> str:
    """'parquet', 'csv' or 'jsonl', from the extension (a trailing .gz etc. is not supported)."""
    ext = posixpath.splitext(url.split("?", 1)[0])[1].lower()
    if ext not in FORMATS:
        raise CatalogError(url, [f"unknown catalog format {ext or '(no extension)'!r}; expected one of {sorted(FORMATS)}"])
    return FORMATS[ext]


def _cell(value: object) -> str | None:
    """Catalog cells as stripped strings; None, NaN and empty strings become None."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    text = str(value).strip()
    return text or None


def read_table(url: str) -> tuple[list[str], list[dict[str, str | None]]]:
    """The column names and the rows (cells as strings or None) of the catalog at ``url``.

    A catalog that cannot be fetched raises ``ssh_model.errors.HarmonizeInputError`` (missing,
    unreachable, forbidden, unsupported_url, ...; ``transient`` for network trouble).
    """
    kind = catalog_format(url)
    try:
        data = read_bytes(url)
    except Exception as err:  # noqa: BLE001 - one line naming the catalog (and the endpoint), typed
        raise storage_error(err, url, "catalog") from err
    if kind == "parquet":
        try:
            table = pq.read_table(pa.BufferReader(data))
        except pa.ArrowInvalid as err:
            raise CatalogError(url, [f"not a Parquet file: {err}"]) from err
        columns = table.column_names
        rows = table.to_pylist()
    elif kind == "csv":
        try:
            reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig")))
            rows = list(reader)
        except (UnicodeDecodeError, csv.Error) as err:
            raise CatalogError(url, [f"not a UTF-8 CSV file: {err}"]) from err
        columns = [c.strip() for c in reader.fieldnames or []]
        rows = [{(k or "").strip(): v for k, v in row.items()} for row in rows]
    else:
        rows, problems = [], []
        for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                problems.append(f"line {number}: not JSON ({err.msg})")
                continue
            if not isinstance(row, dict):
                problems.append(f"line {number}: not a JSON object")
                continue
            rows.append(row)
        if problems:
            raise CatalogError(url, problems)
        columns = list(dict.fromkeys(k for row in rows for k in row))
    return columns, [{k: _cell(v) for k, v in row.items()} for row in rows]


def catalog_dir(url: str) -> str:
    return url.rsplit("/", 1)[0] if "/" in url else "."


def resolve_url(value: str, base: str) -> str:
    """``value`` as is when it has a scheme or is an absolute path, else relative to ``base``."""
    if "://" in value or value.startswith("/"):
        return value
    if "://" not in base:
        return os.path.normpath(os.path.join(os.path.abspath(base), value))
    return join(base, value)


def normalized(url: str) -> str:
    """A canonical form for comparing URLs: local paths absolute, ``file://`` stripped, no double slashes."""
    if url.startswith("file://"):
        url = url[len("file://") :]
    if "://" not in url:
        return os.path.normpath(os.path.abspath(url))
    scheme, rest = url.split("://", 1)
    scheme = "s3" if scheme == "s3a" else scheme
    return f"{scheme}://{posixpath.normpath(rest)}"


def _extension(url: str) -> str:
    return posixpath.splitext(url.rstrip("/").rsplit("/", 1)[-1])[1]


def output_extension(composite_url: str) -> str:
    """The extension of a derived output: the composite's, when it can be written (else ``.png``)."""
    ext = _extension(composite_url)
    return ext if ext.lower() in IMAGE_EXTENSIONS else ".png"


def default_output_prefix(catalog_url: str) -> str:
    """``{data_root}/harmonized/{catalog file stem}``: where outputs go when no ``output_prefix`` is given."""
    stem = posixpath.splitext(posixpath.basename(catalog_url.split("?", 1)[0].rstrip("/")))[0]
    if stem.strip(".") == "":
        raise CatalogError(
            catalog_url, [f"cannot name a default output folder after {catalog_url!r}; give an output_prefix"]
        )
    return normalized(join(get_settings().data_root, DEFAULT_OUTPUT_DIRNAME, stem))


def _segments(url: str) -> list[str]:
    return url.split("://", 1)[-1].replace("\\", "/").split("/")


def place_output(value: str | None, derived_name: str, prefix: str) -> tuple[str, str | None]:
    """Where a row's output goes under ``prefix``, and why it is refused (None when it is safe).

    Args:
        value: the row's ``output`` cell: relative to the prefix, or an absolute URL or path under it;
            None for the derived output ``<prefix>/<derived_name>``.
        derived_name: ``<id><extension>`` for rows without an output.
        prefix: the output prefix, ``normalized``.
    """
    relative = derived_name if value is None else value
    absolute = "://" in relative or relative.startswith("/")
    if ".." in _segments(relative):
        return (relative if absolute else join(prefix, relative)), "contains '..'"
    if absolute:
        url = relative
    elif "://" in prefix:
        url = join(prefix, posixpath.normpath(relative))
    else:
        url = os.path.normpath(os.path.join(prefix, relative))
    results_dir = join(prefix, RESULTS_DIRNAME)
    extension = _extension(url)
    if not is_under(normalized(url), prefix):
        return url, f"is outside the output prefix {prefix}"
    if normalized(url) == results_dir or is_under(normalized(url), results_dir):
        return url, f"is inside the reserved results folder {results_dir}"
    if extension.lower() not in IMAGE_EXTENSIONS:
        found = f"extension {extension!r}" if extension else "no image extension"
        return url, f"has {found}; outputs end in {', '.join(IMAGE_EXTENSIONS)}"
    if "://" not in prefix and not is_under(os.path.realpath(normalized(url)), os.path.realpath(prefix)):
        return url, f"leaves the output prefix {prefix} through a symbolic link"
    return url, None


def _label(number: int, row_id: str | None) -> str:
    return f"row {number} (id {row_id!r})" if row_id is not None else f"row {number}"


def _first_row_number(problem: str) -> int:
    words = problem.replace(",", " ").split()
    return int(words[1]) if len(words) > 1 and words[1].isdigit() else 0


def build_catalog(
    url: str, columns: list[str], cells: list[dict[str, str | None]], output_prefix: str | None = None
) -> Catalog:
    """Resolve and validate catalog rows; raise one CatalogError listing every catalog-wide problem.

    Args:
        url: the catalog's URL (relative inputs are resolved against its folder; named in errors).
        columns: the table's column names.
        cells: the rows, cells as strings or None.
        output_prefix: where every output goes; None: ``default_output_prefix(url)``. Rows whose
            ``output`` is not safely under it keep ``output_refused`` (see the module docstring).
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise CatalogError(
            url, [f"missing required column(s) {', '.join(missing)}; found {', '.join(columns) or 'no columns'}"]
        )
    if not cells:
        raise CatalogError(url, ["the catalog has no rows"])
    base = catalog_dir(url)
    prefix = normalized(output_prefix.rstrip("/")) if output_prefix else default_output_prefix(url)
    problems: list[str] = []

    rows_by_number: dict[int, dict[str, str | None]] = {}
    for number, row in enumerate(cells, start=1):
        empty = [c for c in REQUIRED_COLUMNS if not row.get(c)]
        if empty:
            problems.append(f"{_label(number, row.get('id'))}: empty {', '.join(empty)}")
            continue
        resolved = {c: resolve_url(row[c], base) if row.get(c) else None for c in INPUT_COLUMNS}
        derived_name = row["id"] + output_extension(resolved["composite"])
        resolved["output"], resolved["output_refused"] = place_output(row.get("output"), derived_name, prefix)
        resolved["id"] = row["id"]
        rows_by_number[number] = resolved

    ids: dict[str, list[int]] = defaultdict(list)
    output_rows: dict[str, list[int]] = defaultdict(list)
    all_inputs = {normalized(r[c]): (n, c) for n, r in rows_by_number.items() for c in INPUT_COLUMNS if r[c]}
    for number, row in rows_by_number.items():
        ids[row["id"]].append(number)
        clash = all_inputs.get(normalized(row["output"]))
        if clash is not None:
            where = "its own" if clash[0] == number else f"row {clash[0]}'s"
            problems.append(f"{_label(number, row['id'])}: output {row['output']} is {where} input {clash[1]}")
        elif row["output_refused"] is None:
            output_rows[normalized(row["output"])].append(number)
    for row_id, numbers in ids.items():
        if len(numbers) > 1:
            problems.append(f"rows {', '.join(map(str, numbers))}: duplicate id {row_id!r}")
    for output, numbers in output_rows.items():
        if len(numbers) > 1 and len({rows_by_number[n]["id"] for n in numbers}) > 1:  # else: duplicate id
            problems.append(f"rows {', '.join(map(str, numbers))}: same output {output}")
    if problems:
        raise CatalogError(url, sorted(problems, key=_first_row_number))

    rows = [
        CatalogRow(
            id=r["id"],
            composite=r["composite"],
            mask=r["mask"],
            output=r["output"],
            background=r["background"],
            reference_mask=r["reference_mask"],
            target=r["target"],
            output_refused=None if r["output_refused"] is None else f"output {redact(r['output'])} {r['output_refused']}",
        )
        for r in rows_by_number.values()
    ]
    return Catalog(
        url=url,
        rows=rows,
        output_prefix=prefix,
        has_background=any(r.background for r in rows),
        has_target=any(r.target for r in rows),
    )


def read_catalog(url: str, output_prefix: str | None = None) -> Catalog:
    """Read and validate the catalog at ``url`` (see the module docstring); no image is read.

    Args:
        url: the catalog.
        output_prefix: where every output goes; None: ``default_output_prefix(url)``.
    """
    columns, cells = read_table(url)
    catalog = build_catalog(url, columns, cells, output_prefix)
    logger.info(
        "catalog %s: %d rows, outputs under %s%s",
        url,
        len(catalog),
        catalog.output_prefix,
        ", with ground truth" if catalog.has_target else "",
    )
    refused = [row for row in catalog.rows if row.output_refused]
    if refused:
        logger.warning(
            "catalog %s: %d rows will fail as unsafe_output, e.g. id %r: %s",
            url,
            len(refused),
            refused[0].id,
            refused[0].output_refused,
        )
    return catalog


def write_catalog(rows: list[dict[str, str]], url: str) -> None:
    """Write catalog rows (dicts of strings) in the format of ``url``'s extension; for users and tests."""
    kind = catalog_format(url)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    if kind == "parquet":
        sink = pa.BufferOutputStream()
        schema = pa.schema([(c, pa.string()) for c in columns])
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), sink)
        data = sink.getvalue().to_pybytes()
    elif kind == "csv":
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        data = text.getvalue().encode("utf-8")
    else:
        data = "".join(json.dumps(row) + "\n" for row in rows).encode("utf-8")
    write_bytes_atomic(url, data)
