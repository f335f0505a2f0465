"""Flow ``ingest-images``: natural photos from URLs, folders and globs -> the image manifest.

    prefect deployment run ingest-images/default -p 'sources=["s3://bucket/photos/**/*.jpg"]'
    python -m flows.ingest_images builtin://samples /path/to/photos --data-root s3://bucket/ssh

Writes ``{data_root}/images/manifest.parquet`` (one row per distinct photo: sha256 id, source URL,
size, format, split), ``{data_root}/images/rejects.parquet`` (URL, reason, detail) and a copy of
each accepted photo under ``{data_root}/images/blobs/``. Incremental and idempotent: see
``pipeline.ingest``.
"""

from __future__ import annotations

import argparse
import json
import sys

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from pipeline.ingest import IngestSummary
from ssh_model.samples import BUILTIN_SAMPLES_URL
from ssh_model.settings import get_settings
from tasks.common import run_logger
from tasks.ingest import ingest_photos, list_sources


def summary_markdown(summary: IngestSummary) -> str:
    lines = [
        "| | |",
        "|---|---|",
        f"| sources | {', '.join(f'`{s}`' for s in summary.sources)} |",
        f"| URLs listed / already known | {summary.listed} / {summary.skipped_known} |",
        f"| photos added / in the manifest | {summary.added} / {summary.images} |",
        f"| manifest | `{summary.manifest_url}` |",
        f"| rejects | `{summary.rejects_url}` ({summary.rejected}) |",
    ]
    lines += [f"| split {name} | {count} |" for name, count in summary.splits.items()]
    lines += [f"| rejected: {reason} | {count} |" for reason, count in summary.reasons.items()]
    return "\n".join(lines)


@flow(name="ingest-images")
def ingest_images(sources: list[str] | None = None, data_root: str | None = None, max_workers: int = 8) -> dict:
    """Add the photos of ``sources`` to the image manifest under ``data_root``.

    Args:
        sources: URLs of photos, folders (searched recursively for .jpg/.jpeg/.png/.webp) or globs,
            any fsspec scheme; ``builtin://samples`` names the colour photos bundled with
            scikit-image and scikit-learn (the default).
        data_root: where ``images/`` lives (default: the ``SSH_DATA_ROOT`` setting).
        max_workers: photos read at once.
    """
    if max_workers < 1:
        raise ValueError(f"max_workers must be at least 1, got {max_workers}")
    sources = list(sources or [BUILTIN_SAMPLES_URL])
    data_root = data_root or get_settings().data_root
    log = run_logger()
    log.info("ingesting %s into %s", sources, data_root)
    urls, empty_sources = list_sources(sources)
    summary = ingest_photos(urls, data_root, empty_sources=empty_sources, max_workers=max_workers, sources=sources)
    create_markdown_artifact(summary_markdown(summary), key="ingest-images-summary", description="ingest-images run summary")
    return summary.as_dict()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.ingest_images", description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="*", default=[BUILTIN_SAMPLES_URL])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--max-workers", type=int, default=8)
    args = parser.parse_args(argv)
    result = ingest_images(args.sources or None, args.data_root, args.max_workers)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
