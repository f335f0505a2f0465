"""The Prefect tasks of the ``harmonize-batch`` flow: thin wrappers over catalog, batch_inference and results.

Kept apart from those modules so that Ray workers, which import them, never import Prefect. Only the
tasks that do plain storage I/O retry (``tasks.common.IO_TASK``); the inference task is resumable instead.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from pipeline.batch_actor import ModelPayload, load_model_payload
from pipeline.batch_inference import JobOutcome, run_job
from pipeline.catalog import Catalog, read_catalog
from pipeline.configs import BatchConfig
from pipeline.job_report import render_job_report
from pipeline.ray_runtime import ray_session
from pipeline.results import load_previous, merge_results, new_run_id, report_url
from ssh_model.storage import write_bytes_atomic
from tasks.common import IO_TASK, run_logger


@task(name="load-catalog", **IO_TASK)
def load_catalog(url: str, output_prefix: str | None) -> Catalog:
    """Read and validate the catalog; fails with one message listing every catalog-wide problem.

    Every output lies under ``output_prefix``; None means ``{data_root}/harmonized/{catalog file stem}``
    (``pipeline.catalog.default_output_prefix``). Rows with unsafe outputs fail alone later (unsafe_output).
    """
    catalog = read_catalog(url, output_prefix)
    run_logger().info(
        "catalog %s: %d rows; outputs under %s; results in %s", url, len(catalog), catalog.output_prefix, catalog.results_dir
    )
    return catalog


@task(name="resolve-model", **IO_TASK)
def resolve_model(model_uri: str) -> ModelPayload:
    """Load the model behind ``model_uri`` once; an alias is pinned to this version for the whole run."""
    model = load_model_payload(model_uri)
    run_logger().info("model %s resolves to version %s (%d bytes)", model_uri, model.version, len(model.weights))
    return model


@task(name="load-previous-results", **IO_TASK)
def load_previous_results(results_dir: str) -> dict[str, dict]:
    previous = load_previous(results_dir)
    if previous:
        run_logger().info("%d rows have records from earlier runs", len(previous))
    return previous


@task(name="harmonize-rows", cache_policy=NO_CACHE)
def harmonize_rows(catalog: Catalog, options: BatchConfig, model: ModelPayload, previous: dict[str, dict]) -> JobOutcome:
    """The Ray Data job; not retried (a re-run of the flow resumes where this one stopped)."""
    with ray_session():
        return run_job(catalog, options, model, previous, new_run_id(), log=run_logger())


@task(name="publish-results", **IO_TASK)
def publish_results(results_dir: str) -> str:
    """Merge the run's record fragments into the results table (idempotent, so safe to retry)."""
    url, table = merge_results(results_dir)
    run_logger().info("results table: %s (%d rows)", url, table.num_rows)
    return url


@task(name="write-report", **IO_TASK)
def write_report(catalog: Catalog, outcome: JobOutcome, model_uri: str) -> str:
    """Render the HTML report next to the results table; returns its URL."""
    url = report_url(catalog.results_dir)
    html = render_job_report(
        f"harmonize-batch: {catalog.url}",
        outcome.records,
        outcome.thumbnails,
        outcome.summary,
        extra={"catalog": catalog.url, "model": model_uri, "run": outcome.run_id},
    )
    write_bytes_atomic(url, html.encode("utf-8"))
    return url
