"""The ``composite``, ``evaluate`` and ``catalog`` commands of ``ssh-harmonize`` (typer front ends in ``flows.cli``).

Expected problems with the input raise ``InputError`` (or the ``ValueError``/``OSError`` of the
reader that found them, e.g. the typed ``ssh_model.errors`` ones: ``ImageError``, ``ModelError``);
``flows.cli.main`` prints them as one line and exits with status 2. Output URLs are checked
(``writable``) before any work, so an unknown scheme or a missing filesystem backend costs nothing and
writes nothing. Heavy imports (torch, Prefect) happen inside the command that needs them.
"""

from __future__ import annotations

import json
import logging
import posixpath
import sys
from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console
from rich.progress import track

from ssh_model.errors import HarmonizeInputError

if TYPE_CHECKING:
    from pipeline.catalog import CatalogRow
    from pipeline.evaluation import Evaluation, Method
    from ssh_model.composites import Composite

logger = logging.getLogger("ssh.cli")

MODEL_LABEL = "model"


class InputError(ValueError):
    """Bad input found by a command: printed as one line, exit status 2."""


def output_format(url: str) -> str:
    """The image format ``encode_image`` writes for ``url``'s extension; else the one-line error."""
    from ssh_model.images import IMAGE_EXTENSIONS
    from ssh_model.images import output_format as format_of

    fmt = format_of(url)
    if fmt is None:
        ext = posixpath.splitext(url.split("?", 1)[0])[1].lower()
        raise InputError(
            f"output {url}: cannot tell the image format from {ext or 'no extension'!r}; "
            f"use one of {', '.join(IMAGE_EXTENSIONS)}"
        )
    return fmt


def writable(url: str, role: str = "output") -> str:
    """``url`` when a filesystem for it can be opened; else the one-line typed error naming it
    (``unsupported_url`` for an unknown scheme such as foo:// or a backend not installed, gs:// without gcsfs)."""
    from ssh_model.errors import storage_error
    from ssh_model.storage import filesystem

    try:
        filesystem(url)
    except Exception as err:  # noqa: BLE001 - fsspec raises ValueError or ImportError, backends their own
        raise storage_error(err, url, role) from err
    return url


def write_output(url: str, data: bytes, role: str = "output") -> None:
    """Write ``data`` to ``url`` atomically; a storage failure is the one-line typed error naming ``url``."""
    from ssh_model.errors import storage_error
    from ssh_model.storage import write_bytes_atomic

    try:
        write_bytes_atomic(url, data)
    except Exception as err:  # noqa: BLE001 - every storage failure becomes a typed error naming the URL
        raise storage_error(err, url, role) from err


def require_same_size(first: tuple[str, np.ndarray], *others: tuple[str, np.ndarray]) -> None:
    """Each of ``(label, pixels)`` in ``others`` (a label such as "mask m.png") must have the height and width
    of ``first``."""
    label, pixels = first
    height, width = pixels.shape[:2]
    for other_label, other in others:
        if other.shape[:2] != (height, width):
            raise InputError(f"{other_label} is {other.shape[1]}x{other.shape[0]} but {label} is {width}x{height}")


def refuse_overwriting(output: str, inputs: list[str]) -> None:
    from pipeline.catalog import normalized

    if normalized(output) in {normalized(url) for url in inputs}:
        raise InputError(f"output {output} is also an input; inputs are never overwritten")


def split_names(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [name.strip() for name in text.split(",") if name.strip()]


# -- composite --------------------------------------------------------------------------------------


def cmd_composite(
    foreground_url: str,
    mask_url: str | None,
    background_url: str,
    output: str,
    grade: int | None,
    strength: float | None,
    quality: int,
) -> int:
    from ssh_model.images import encode_image, read_image, read_image_with_mask
    from ssh_model.inference import blend_region
    from ssh_model.lut import apply_lut, random_lut

    if grade is None and strength is not None:
        raise InputError("--strength needs --grade SEED")
    strength = 1.0 if strength is None else strength
    if strength < 0:
        raise InputError(f"--strength must be >= 0, got {strength:g}")
    fmt = output_format(writable(output))
    refuse_overwriting(output, [foreground_url, *filter(None, [mask_url]), background_url])
    foreground, mask, mask_name = read_image_with_mask(foreground_url, mask_url, "foreground")
    background = read_image(background_url)
    require_same_size(
        (f"foreground {foreground_url}", foreground), (mask_name, mask), (f"background {background_url}", background)
    )
    if grade is not None:
        foreground = apply_lut(foreground, random_lut(grade, strength=strength))
    height, width = mask.shape
    composite = blend_region(background, foreground, mask, (0, 0, width, height))
    write_output(output, encode_image(composite, fmt, quality=quality))
    print(output)
    return 0


# -- evaluate ---------------------------------------------------------------------------------------


def load_row(row: CatalogRow) -> tuple[Composite, np.ndarray | None]:
    """A catalog row's images as an evaluation item (composite, mask, target) and its background, if any."""
    from ssh_model.composites import Composite
    from ssh_model.images import read_image, read_image_with_mask

    if not row.target:
        raise InputError("no target (ground truth) in the catalog")
    composite, mask, mask_name = read_image_with_mask(row.composite, row.mask)
    target = read_image(row.target)
    require_same_size((f"composite {row.composite}", composite), (mask_name, mask), (f"target {row.target}", target))
    background = read_image(row.background) if row.background else None
    return Composite(id=row.id, composite=composite, mask=mask, target=target, lut="", level=""), background


def evaluate_rows(
    methods: dict[str, Method], rows: list[CatalogRow], set_name: str
) -> tuple[Evaluation, list[tuple[str, str]]]:
    """Every method on every row, one row's images in memory at a time.

    Returns:
        (evaluation, failures): a row whose images cannot be read or do not fit together, or that a
        method rejects, is left out of the evaluation (every method is scored on the same rows) and
        listed in ``failures`` as (id, reason).
    """
    from pipeline.evaluation import Evaluation, evaluate_composites

    result = Evaluation(set_name)
    failures: list[tuple[str, str]] = []
    console = Console(stderr=True)
    for number, row in enumerate(track(rows, "scoring rows", console=console, disable=not console.is_terminal), 1):
        try:
            item, background = load_row(row)
            scored = evaluate_composites(methods, [item], backgrounds=[background])
        except (ValueError, OSError) as err:
            failures.append((row.id, describe_error(err)))
            continue
        result.rows.extend(scored.rows)
        for name, seconds in scored.seconds.items():
            result.seconds[name] = result.seconds.get(name, 0.0) + seconds
        if not console.is_terminal:  # a log file gets a line per row instead of a bar
            logger.info("row %d/%d (%s) scored", number, len(rows), row.id)
    return result, failures


def read_evaluation_catalog(url: str, limit: int | None) -> list[CatalogRow]:
    """The first ``limit`` rows of the catalog at ``url`` (validated like a batch catalog; outputs ignored)."""
    from pipeline.catalog import build_catalog, catalog_dir, read_table
    from ssh_model.storage import join

    columns, cells = read_table(url)
    if "target" not in columns:
        raise InputError(
            f"catalog {url} has no target column: evaluate needs the ground truth of every row "
            f"(columns: {', '.join(columns) or 'none'})"
        )
    # Nothing is written: drop any output URLs and derive placeholder ones, which validation needs.
    unused_outputs = join(catalog_dir(url), "_evaluate_outputs_unused")
    catalog = build_catalog(url, columns, [{**cells_row, "output": None} for cells_row in cells], unused_outputs)
    return catalog.rows[:limit]


def cmd_evaluate(
    catalog: str, model_ref: str, baseline_names: str | None, limit: int | None, json_url: str | None, device: str
) -> int:
    from ssh_model.baselines import BASELINES

    baselines = list(BASELINES) if baseline_names is None else split_names(baseline_names)
    unknown = [name for name in baselines if name not in BASELINES]
    if unknown:
        raise InputError(f"unknown baselines {', '.join(unknown)}; choose from {', '.join(BASELINES)}")
    if limit is not None and limit < 1:
        raise InputError(f"--limit must be at least 1, got {limit}")
    if json_url:
        writable(json_url, "--json")
    rows = read_evaluation_catalog(catalog, limit)

    from pipeline.evaluation import BENCHMARK_METRICS, format_table, methods_for
    from pipeline.registry import load_registered_model

    model, version = load_registered_model(model_ref, device)
    logger.info("model %s (%s), %d rows", version, model_ref, len(rows))
    methods = methods_for({MODEL_LABEL: model}, baselines)
    set_name = posixpath.splitext(posixpath.basename(catalog.rstrip("/")))[0]
    evaluation, failures = evaluate_rows(methods, rows, set_name)

    summary = evaluation.summary()
    print(f"{MODEL_LABEL}: {model_ref} ({version}); {len(rows) - len(failures)} of {len(rows)} rows scored")
    print(format_table(summary, BENCHMARK_METRICS))
    for row_id, reason in failures:
        print(f"row {row_id!r} failed: {reason}", file=sys.stderr)
    if failures:
        print(f"{len(failures)} of {len(rows)} rows failed and were left out", file=sys.stderr)
    if json_url:
        write_json(
            json_url,
            {
                "catalog": catalog,
                "model": model_ref,
                "model_version": version,
                "rows_total": len(rows),
                "summary": summary,
                "rows": [{k: v for k, v in row.items() if k != "level"} for row in evaluation.rows],
                "failed": [{"id": row_id, "reason": reason} for row_id, reason in failures],
            },
        )
    return 1 if failures else 0


def write_json(url: str, document: dict[str, Any]) -> None:
    write_output(url, (json.dumps(document, indent=2) + "\n").encode("utf-8"), "--json")
    print(f"wrote {url}")


# -- catalog ----------------------------------------------------------------------------------------


def cmd_catalog(
    layout: str, folder: str, output: str, skip_incomplete: bool, split: str = "test", subset_names: str | None = None
) -> int:
    from pipeline.catalog import MAX_LISTED_PROBLEMS, catalog_format, write_catalog
    from pipeline.public_catalogs import iharmony4_rows, realhm_rows

    catalog_format(writable(output, "catalog"))  # a bad extension or URL fails before the dataset is listed
    if layout == "iharmony4":
        subsets = split_names(subset_names) if subset_names is not None else None
        if subsets == []:
            raise InputError("--subsets names no subset")
        found = iharmony4_rows(folder, split, subsets, skip_incomplete=skip_incomplete)
    else:
        found = realhm_rows(folder, skip_incomplete=skip_incomplete)
    write_catalog(found.rows, output)
    groups = Counter(row["id"].rpartition("/")[0] or "." for row in found.rows)
    counts = ", ".join(f"{group}: {count}" for group, count in sorted(groups.items()))
    print(f"wrote {output}: {len(found.rows)} rows ({counts})")
    if found.skipped:
        listed = found.skipped[:MAX_LISTED_PROBLEMS]
        more = [f"... and {len(found.skipped) - len(listed)} more"] if len(found.skipped) > len(listed) else []
        print(f"skipped {len(found.skipped)} incomplete samples:\n  " + "\n  ".join(listed + more), file=sys.stderr)
    return 0


def describe_error(err: BaseException) -> str:
    """One line for an expected error: the message, with ``file: why`` for OS errors, and a typed error's
    reason code at the end (``[mask_size]``), the same code a batch job's results table records."""
    if isinstance(err, HarmonizeInputError):
        return f"{err} [{err.reason}]"
    if isinstance(err, FileNotFoundError):
        if err.filename is not None:
            return f"{err.filename}: {err.strerror or 'no such file or object'}"
        return f"{err}: no such file or object"
    if isinstance(err, OSError) and err.filename is not None:
        return f"{err.filename}: {err.strerror}"
    return str(err)
