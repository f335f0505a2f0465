"""The Prefect tasks of ingest-images: list the sources, then read the new photos and update the tables.

The work itself is ``pipeline.ingest``; these wrappers add the task names and Prefect's run logger.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence

from prefect import task
from prefect.cache_policies import NO_CACHE

from pipeline.ingest import (
    MANIFEST_SCHEMA,
    REJECTS_SCHEMA,
    IngestSummary,
    Outcome,
    expand_sources,
    images_url,
    merge_outcomes,
    read_all,
    read_table,
    write_if_changed,
)
from ssh_model.settings import get_settings
from tasks.common import run_logger


@task(name="list-sources", cache_policy=NO_CACHE)
def list_sources(sources: Sequence[str]) -> tuple[list[str], list[dict[str, str]]]:
    """Expand the sources into photo URLs (and rejects for sources that matched nothing)."""
    urls, rejects = expand_sources(sources)
    run_logger().info("%d photo URLs in %d sources", len(urls), len(sources))
    return urls, rejects


@task(name="ingest-photos", cache_policy=NO_CACHE)
def ingest_photos(
    urls: Sequence[str],
    data_root: str,
    empty_sources: Sequence[dict[str, str]] = (),
    max_workers: int = 8,
    sources: Sequence[str] = (),
) -> IngestSummary:
    """Read the new URLs, copy the good photos, and update the manifest and rejects tables."""
    log = run_logger()
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
