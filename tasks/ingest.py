"""The Prefect tasks of ingest-images: list the sources, then read the new photos and update the tables.

The work itself is ``pipeline.ingest``; these wrappers add the task names and Prefect's run logger.
"""

from __future__ import annotations

from collections.abc import Sequence

from prefect import task
from prefect.cache_policies import NO_CACHE

from pipeline import ingest
from pipeline.configs import IngestConfig
from pipeline.ingest import IngestSummary, expand_sources
from tasks.common import run_logger


@task(name="list-sources", cache_policy=NO_CACHE)
def list_sources(sources: Sequence[str]) -> tuple[list[str], list[dict[str, str]]]:
    """Expand the sources into photo URLs (and rejects for sources that matched nothing)."""
    urls, rejects = expand_sources(sources)
    run_logger().info("%d photo URLs in %d sources", len(urls), len(sources))
    return urls, rejects


@task(name="ingest-photos", cache_policy=NO_CACHE)
def ingest_photos(
    urls: Sequence[str], data_root: str, empty_sources: Sequence[dict[str, str]], config: IngestConfig
) -> IngestSummary:
    """``pipeline.ingest.ingest_photos`` with the run's logger."""
    return ingest.ingest_photos(
        urls, data_root, empty_sources, max_workers=config.max_workers, sources=config.sources, log=run_logger()
    )
