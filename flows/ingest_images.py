"""Flow ``ingest-images``: natural photos from URLs, folders and globs -> the image manifest.

    prefect deployment run ingest-images/default -p 'config={"sources": ["s3://bucket/photos/**/*.jpg"]}'
    ssh-harmonize ingest --sources builtin://samples --sources /path/to/photos --data-root s3://bucket/ssh

Writes ``{data_root}/images/manifest.parquet`` (one row per distinct photo: sha256 id, source URL,
size, format, split), ``{data_root}/images/rejects.parquet`` (URL, reason, detail) and a copy of
each accepted photo under ``{data_root}/images/blobs/``. Incremental and idempotent: see
``pipeline.ingest``.
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from pipeline.configs import IngestConfig
from pipeline.ingest import IngestSummary
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
def ingest_images(data_root: str | None = None, config: IngestConfig | None = None) -> dict:
    """Add the photos of ``config.sources`` to the image manifest under ``data_root``.

    Args:
        data_root: where ``images/`` lives (default: the ``SSH_DATA_ROOT`` setting).
        config: which photos and how many are read at once (``pipeline.configs.IngestConfig``).
    """
    config = config or IngestConfig()
    data_root = data_root or get_settings().data_root
    log = run_logger()
    log.info("ingesting %s into %s", config.sources, data_root)
    urls, empty_sources = list_sources(config.sources)
    summary = ingest_photos(urls, data_root, empty_sources, config)
    create_markdown_artifact(summary_markdown(summary), key="ingest-images-summary", description="ingest-images run summary")
    return summary.as_dict()
