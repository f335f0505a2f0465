"""Catalog rows for the public harmonization benchmarks, from their folder layouts (local or any fsspec URL).

iHarmony4 (Cong et al. 2020), as DoveNet's loader reads it, one folder per subset (HAdobe5k, HCOCO,
HFlickr, Hday2night):

    DIR/<subset>/<subset>_test.txt, <subset>_train.txt  composite file names, one a line (a folder
                                                         prefix such as ``composite_images/`` is ignored)
    DIR/<subset>/composite_images/c100_1_1.jpg          the composite: <photo>_<object>_<variant>
    DIR/<subset>/masks/c100_1.png                       the object's mask: <photo>_<object>
    DIR/<subset>/real_images/c100.jpg                   the ground truth: <photo>

RealHM (Jiang et al. 2021, the SSH paper), every sample's files side by side in one folder (the
release has three, ``vendor_testing_1`` to ``_3``), named as the authors' demo notebook and later
RealHM loaders read them:

    NAME_composite.jpg, else NAME.jpg            the composite
    NAME_mask.jpg                                its mask
    NAME_gt.jpg                                  the ground truth
    NAME_bg.jpg, NAME_background.jpg, NAME_fore.jpg   optional: the background photo (the authors'
                                                 notebook reads it from ``_fore``)
    NAME_small.jpg                               a downscaled copy: ignored

Any of .jpg, .jpeg and .png (any case) is accepted wherever .jpg or .png is shown. Rows are
``{"id", "composite", "mask", "target"[, "background"]}`` with absolute URLs, ready for
``pipeline.catalog.write_catalog``. Every missing file is reported at once in one ``CatalogError``,
or, with ``skip_incomplete``, the incomplete samples are left out and listed in ``skipped``.
Folders are listed once each (not one request per file), so an ``s3://`` DIR costs a few listings.
"""

from __future__ import annotations

import os
import posixpath
from collections import defaultdict
from dataclasses import dataclass, field

from pipeline.catalog import CatalogError
from ssh_model.images import IMAGE_EXTENSIONS
from ssh_model.storage import filesystem, join, read_bytes

IHARMONY4_SUBSETS = ("HAdobe5k", "HCOCO", "HFlickr", "Hday2night")
IHARMONY4_SPLITS = ("test", "train")
# RealHM file-name suffixes -> role; "" (no suffix) is the composite unless a _composite file exists.
REALHM_ROLES = {
    "_composite": "composite",
    "_mask": "mask",
    "_gt": "target",
    "_bg": "background",
    "_background": "background",
    "_fore": "background",
    "_small": "ignored",
}


@dataclass(frozen=True)
class PublicCatalog:
    """The rows found under ``root``, and the incomplete samples left out (one line each)."""

    root: str
    rows: list[dict[str, str]]
    skipped: list[str] = field(default_factory=list)


def _root(url: str) -> str:
    """``url`` without a trailing slash; local paths made absolute (``file://`` stripped)."""
    if url.startswith("file://"):
        url = url[len("file://") :]
    return url.rstrip("/") if "://" in url else os.path.abspath(url)


def _names(url: str) -> set[str]:
    """The names of the entries directly in the folder ``url`` (empty when it does not exist)."""
    fs, path = filesystem(url)
    try:
        return {posixpath.basename(entry.rstrip("/")) for entry in fs.ls(path, detail=False)}
    except FileNotFoundError:
        return set()


def _is_image(name: str) -> bool:
    return posixpath.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _find(names: set[str], stem: str, extensions: tuple[str, ...]) -> str | None:
    """The first of ``stem`` + each extension (also upper case) present in ``names``."""
    for ext in extensions:
        for candidate in (stem + ext, stem + ext.upper()):
            if candidate in names:
                return candidate
    return None


def _finish(
    root: str, rows: list[dict[str, str]], problems: list[str], incomplete: list[str], skip_incomplete: bool
) -> PublicCatalog:
    """Raise one CatalogError for layout problems (and incomplete samples unless they are skipped)."""
    if skip_incomplete:
        if problems:
            raise CatalogError(root, problems)
        if not rows:
            raise CatalogError(root, ["no complete sample: every sample misses a file", *incomplete])
        return PublicCatalog(root, rows, incomplete)
    if problems or incomplete:
        raise CatalogError(root, problems + incomplete)
    if not rows:
        raise CatalogError(root, ["no sample found"])
    return PublicCatalog(root, rows)


# -- iHarmony4 --------------------------------------------------------------------------------------


def iharmony4_rows(
    root: str, split: str = "test", subsets: list[str] | None = None, skip_incomplete: bool = False
) -> PublicCatalog:
    """Catalog rows for the ``split`` lists of the iHarmony4 ``subsets`` under ``root``.

    Args:
        root: the dataset folder (holding HCOCO/, HAdobe5k/, ...), local or an fsspec URL.
        split: "test" or "train": which ``<subset>_<split>.txt`` lists the samples.
        subsets: folder names to read (default: those of ``IHARMONY4_SUBSETS`` that are present).
        skip_incomplete: leave out samples with a missing file instead of failing.
    """
    if split not in IHARMONY4_SPLITS:
        raise ValueError(f"split must be one of {IHARMONY4_SPLITS}, got {split!r}")
    root = _root(root)
    present = _names(root)
    if subsets is None:
        subsets = [subset for subset in IHARMONY4_SUBSETS if subset in present]
        if not subsets:
            raise CatalogError(root, [f"no iHarmony4 subset folder ({', '.join(IHARMONY4_SUBSETS)}) in {root}"])
    rows: list[dict[str, str]] = []
    problems: list[str] = []
    incomplete: list[str] = []
    for subset in subsets:
        if subset not in present:
            problems.append(f"{subset}: no folder {join(root, subset)}")
            continue
        folder = join(root, subset)
        listing = join(folder, f"{subset}_{split}.txt")
        try:
            lines = read_bytes(listing).decode("utf-8-sig").splitlines()
        except FileNotFoundError:
            problems.append(f"{subset}: no list of {split} samples {listing}")
            continue
        found = {kind: _names(join(folder, kind)) for kind in ("composite_images", "masks", "real_images")}
        for number, line in enumerate(lines, start=1):
            name = line.strip().rpartition("/")[2]
            if not name:
                continue
            stem = posixpath.splitext(name)[0]
            parts = stem.split("_")
            if len(parts) < 3 or not _is_image(name):
                problems.append(
                    f"{subset}_{split}.txt line {number}: {line.strip()!r} is not a composite name like c100_1_1.jpg"
                )
                continue
            mask = _find(found["masks"], "_".join(parts[:-1]), (".png", ".jpg", ".jpeg"))
            target = _find(found["real_images"], "_".join(parts[:-2]), (".jpg", ".jpeg", ".png"))
            missing = [f"composite composite_images/{name}"] if name not in found["composite_images"] else []
            if mask is None:
                missing.append(f"mask masks/{'_'.join(parts[:-1])}.png")
            if target is None:
                missing.append(f"target real_images/{'_'.join(parts[:-2])}.jpg")
            if missing:
                incomplete.append(f"{subset}/{stem}: missing {', '.join(missing)}")
                continue
            rows.append(
                {
                    "id": f"{subset}/{stem}",
                    "composite": join(folder, "composite_images", name),
                    "mask": join(folder, "masks", mask),
                    "target": join(folder, "real_images", target),
                }
            )
    return _finish(root, rows, problems, incomplete, skip_incomplete)


# -- RealHM -----------------------------------------------------------------------------------------


def _role(stem: str) -> tuple[str, str]:
    """(sample name, role) of a RealHM file stem: ``x_mask`` -> ("x", "mask"), ``x`` -> ("x", "plain")."""
    for suffix in sorted(REALHM_ROLES, key=len, reverse=True):
        if stem.lower().endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)], REALHM_ROLES[suffix]
    return stem, "plain"


def realhm_rows(root: str, skip_incomplete: bool = False) -> PublicCatalog:
    """Catalog rows for every RealHM sample under ``root`` (searched recursively); ids are
    ``<folder relative to root>/NAME``.

    Args:
        root: the dataset folder, local or an fsspec URL.
        skip_incomplete: leave out samples with a missing file instead of failing.
    """
    root = _root(root)
    fs, path = filesystem(root)
    if not fs.isdir(path):
        raise CatalogError(root, [f"{root} is not a folder"])
    samples: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for found in sorted(fs.find(path)):
        relative = posixpath.relpath(found, path)
        if not _is_image(relative):
            continue
        folder, name = posixpath.split(relative)
        sample, role = _role(posixpath.splitext(name)[0])
        samples[posixpath.join(folder, sample)][role].append(relative)
    rows: list[dict[str, str]] = []
    problems: list[str] = []
    incomplete: list[str] = []
    for sample_id, roles in sorted(samples.items()):
        if set(roles) == {"ignored"}:
            continue
        files = {
            "composite": roles["composite"] or roles["plain"],
            "mask": roles["mask"],
            "target": roles["target"],
            "background": roles["background"],
        }
        ambiguous = {role: names for role, names in files.items() if len(names) > 1}
        if ambiguous:
            problems.extend(f"{sample_id}: several {role} files: {', '.join(names)}" for role, names in ambiguous.items())
            continue
        name = posixpath.basename(sample_id)
        expected = {
            "composite": f"composite {name}.jpg (or {name}_composite.jpg)",
            "mask": f"mask {name}_mask.jpg",
            "target": f"target {name}_gt.jpg",
        }
        missing = [expected[role] for role in ("composite", "mask", "target") if not files[role]]
        if missing:
            incomplete.append(f"{sample_id}: missing {', '.join(missing)}")
            continue
        rows.append({"id": sample_id, **{role: join(root, names[0]) for role, names in files.items() if names}})
    return _finish(root, rows, problems, incomplete, skip_incomplete)


__all__ = ["IHARMONY4_SUBSETS", "PublicCatalog", "iharmony4_rows", "realhm_rows"]
