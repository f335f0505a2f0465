"""The Prefect tasks of the ``harmonize-batch`` flow: thin wrappers over catalog, batch_inference and results.

Kept apart from those modules so that Ray workers, which import them, never import Prefect.
Only tasks that do plain storage I/O retry, and only on transient I/O errors (``is_transient_io_error``:
refused or reset connections, unreachable endpoints, timeouts, HTTP 5xx, throttling): a bad catalog or
a missing object will not get better by waiting, and the inference task is resumable instead.
Retries back off (``IO_RETRY_DELAYS``) and stop once ``IO_RETRY_BUDGET_S`` have passed since the first
try, so an S3 endpoint that is down fails the flow in well under a minute (s3fs and botocore already
retry each call for about 12 s), with one line naming the endpoint.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pipeline.batch_inference import JobOptions, JobOutcome, run_job
from pipeline.batch_stages import ModelPayload, load_model_payload
from pipeline.catalog import Catalog, read_catalog
from pipeline.job_report import render_job_report
from pipeline.ray_runtime import ray_init
from pipeline.results import load_previous, merge_results, new_run_id, report_url
from ssh_model.errors import is_transient
from ssh_model.storage import write_bytes_atomic

IO_RETRIES = 3
IO_RETRY_DELAYS = [1, 3, 9]  # seconds before the 1st, 2nd and 3rd retry
IO_RETRY_BUDGET_S = 15.0  # no retry starts once this long has passed since the task's first try


def is_transient_io_error(error: object) -> bool:
    """True when waiting may help: refused or reset connections, unreachable endpoints (botocore's
    EndpointConnectionError), connect and read timeouts, HTTP 5xx and throttling (SlowDown, 503), and
    other OS-level I/O errors; False for missing or forbidden objects, bad URLs, bad data and non-errors.
    Causes count: fsspec's HTTP ``FileNotFoundError`` raised from a refused connection is transient."""
    return isinstance(error, BaseException) and is_transient(error)


def seconds_since_first_try(task_run: Any) -> float:
    started = getattr(task_run, "start_time", None)
    if started is None:
        return 0.0
    return (datetime.now(UTC) - started).total_seconds()


def retry_on_io(task: Any, task_run: Any, state: Any) -> bool:
    """``retry_condition_fn``: retry a transient I/O error while within ``IO_RETRY_BUDGET_S``."""
    return is_transient_io_error(getattr(state, "data", None)) and seconds_since_first_try(task_run) < IO_RETRY_BUDGET_S


_io_task = {
    "retries": IO_RETRIES,
    "retry_delay_seconds": IO_RETRY_DELAYS,
    "retry_condition_fn": retry_on_io,
    "cache_policy": NO_CACHE,
}


@task(name="load-catalog", **_io_task)
def load_catalog(url: str, output_prefix: str | None) -> Catalog:
    """Read and validate the catalog; fails with one message listing every catalog-wide problem.

    Every output lies under ``output_prefix``; None means ``{data_root}/harmonized/{catalog file stem}``
    (``pipeline.catalog.default_output_prefix``). Rows with unsafe outputs fail alone later (unsafe_output).
    """
    catalog = read_catalog(url, output_prefix)
    get_run_logger().info(
        "catalog %s: %d rows; outputs under %s; results in %s", url, len(catalog), catalog.output_prefix, catalog.results_dir
    )
    return catalog


@task(name="resolve-model", **_io_task)
def resolve_model(model_uri: str) -> ModelPayload:
    """Load the model behind ``model_uri`` once; an alias is pinned to this version for the whole run."""
    model = load_model_payload(model_uri)
    get_run_logger().info("model %s resolves to version %s (%d bytes)", model_uri, model.version, len(model.weights))
    return model


@task(name="load-previous-results", **_io_task)
def load_previous_results(results_dir: str) -> dict[str, dict]:
    previous = load_previous(results_dir)
    if previous:
        get_run_logger().info("%d rows have records from earlier runs", len(previous))
    return previous


@task(name="harmonize-rows", cache_policy=NO_CACHE)
def harmonize_rows(catalog: Catalog, options: JobOptions, model: ModelPayload, previous: dict[str, dict]) -> JobOutcome:
    """The Ray Data job; not retried (a re-run of the flow resumes where this one stopped)."""
    log = get_run_logger()
    started_ray = ray_init()
    try:
        return run_job(catalog, options, model, previous, new_run_id(), log=log)
    finally:
        if started_ray:
            import ray

            ray.shutdown()


@task(name="publish-results", **_io_task)
def publish_results(results_dir: str) -> str:
    """Merge the run's record fragments into the results table (idempotent, so safe to retry)."""
    url, table = merge_results(results_dir)
    get_run_logger().info("results table: %s (%d rows)", url, table.num_rows)
    return url


@task(name="write-report", **_io_task)
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
