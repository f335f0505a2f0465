"""The research photo corpus: where it is and how it is laid out (it is never part of the package).

    {root}/train/<source>/<name>.jpg                     photos to train on (ingest makes train/val from them)
    {root}/holdout/<source>/<name>.jpg                   never trained on: quality benchmarks only
    {root}/masks/{train,holdout}/bsds500/<name>_<k>.png  object masks of the BSDS500 photos
    {root}/SOURCES.tsv                                   origin and terms of every file

The root is ``SSH_PHOTO_CORPUS`` when set, else ``shared/photos`` beside this checkout (``../shared/photos``
from the repository root). What needs the corpus calls ``corpus_root()`` first and so fails with one
clear ``CorpusMissing`` message on a machine that does not have it.
"""

from __future__ import annotations

import os
from pathlib import Path

from ssh_model.images import IMAGE_EXTENSIONS

ENV_VAR = "SSH_PHOTO_CORPUS"
SPLITS = ("train", "holdout")


class CorpusMissing(FileNotFoundError):
    """The photo corpus is not on this machine."""


def default_root() -> Path:
    return Path(__file__).resolve().parents[2] / "shared" / "photos"


def corpus_root(root: str | os.PathLike | None = None) -> Path:
    """The corpus folder: ``root``, else ``$SSH_PHOTO_CORPUS``, else ``../shared/photos``; checked to exist."""
    path = Path(root or os.environ.get(ENV_VAR) or default_root())
    if not (path / "train").is_dir() or not (path / "holdout").is_dir():
        raise CorpusMissing(
            f"the photo corpus is not at {path} (no train/ and holdout/ folders): this needs the research "
            f"photos (see the README); set {ENV_VAR} to their folder"
        )
    return path


def photos(root: Path, split: str) -> list[Path]:
    """Every photo of ``split`` (train or holdout), sorted by path."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return sorted(p for p in (root / split).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)


def object_masks(root: Path, split: str) -> dict[str, list[Path]]:
    """Photo stem -> its object masks (``masks/{split}/*/<stem>_<k>.png``), masks sorted."""
    found: dict[str, list[Path]] = {}
    for path in sorted((root / "masks" / split).rglob("*.png")):
        stem, _, k = path.stem.rpartition("_")
        if stem and k.isdigit():
            found.setdefault(stem, []).append(path)
    return found


__all__ = ["ENV_VAR", "SPLITS", "CorpusMissing", "corpus_root", "default_root", "object_masks", "photos"]
