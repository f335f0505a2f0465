"""Flow ``harmonize-batch``: harmonize every composite of a catalog over object storage.

    prefect deployment run harmonize-batch/default -p catalog=s3://bucket/catalog.parquet \\
        -p output_prefix=s3://bucket/harmonized

Validates the catalog, pins the model version, runs the Ray Data job (resumable: a re-run skips
rows already made from the same inputs by the same model), publishes the results table and an
HTML report next to the outputs, and fails only when more than ``max_error_rate`` of the rows failed.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact

from pipeline.batch_inference import JobOptions
from pipeline.job_report import RunSummary
from pipeline.registry import default_model_uri
from ssh_model.pretrained import PRETRAINED_URI
from tasks.harmonize_tasks import (
    harmonize_rows,
    load_catalog,
    load_previous_results,
    publish_results,
    resolve_model,
    write_report,
)


class ErrorRateExceeded(RuntimeError):
    """More rows failed than the job allows; the message gives the counts and where to look."""


def check_parameters(
    max_error_rate: float, jpeg_quality: int, concurrency: int | None, num_gpus: float | None, batch_size: int
) -> None:
    problems = []
    if not 0.0 <= max_error_rate <= 1.0:
        problems.append(f"max_error_rate must be in [0, 1], got {max_error_rate}")
    if not 1 <= jpeg_quality <= 100:
        problems.append(f"jpeg_quality must be in [1, 100], got {jpeg_quality}")
    if concurrency is not None and concurrency < 1:
        problems.append(f"concurrency must be at least 1, got {concurrency}")
    if num_gpus is not None and num_gpus < 0:
        problems.append(f"num_gpus must be >= 0, got {num_gpus}")
    if batch_size < 1:
        problems.append(f"batch_size must be at least 1, got {batch_size}")
    if problems:
        raise ValueError("; ".join(problems))


def summary_markdown(summary: RunSummary, catalog: str, results: str, report: str) -> str:
    lines = [
        "| | |",
        "|---|---|",
        f"| catalog | `{catalog}` |",
        f"| model version | `{summary.model_version}` |",
        f"| rows | {summary.total} |",
        f"| ok / skipped / error | {summary.ok} / {summary.skipped} / {summary.error} |",
        f"| error rate | {summary.error_rate:.1%} |",
        f"| rows/s | {summary.rows_per_s:.2f} |",
        f"| results | `{results}` |",
        f"| report | `{report}` |",
    ]
    lines += [f"| error {reason} | {count} |" for reason, count in sorted(summary.reasons.items())]
    lines += [
        f"| mean {name} | {value:.3f} |" for name, value in summary.mean_metrics.items() if name.endswith(("_psnr", "_fmse"))
    ]
    return "\n".join(lines)


@flow(name="harmonize-batch")
def harmonize_batch(
    catalog: str,
    output_prefix: str | None = None,
    model: str | None = None,
    overwrite: bool = False,
    max_error_rate: float = 0.05,
    concurrency: int | None = None,
    num_gpus: float | None = None,
    jpeg_quality: int = 95,
    batch_size: int = 1,
) -> dict:
    """Harmonize a catalog of composites.

    Args:
        catalog: URL of a Parquet, CSV or JSONL catalog (columns id, composite, mask, and optionally
            background, target, output).
        output_prefix: the one prefix every output lies under (default ``{data_root}/harmonized/{catalog file
            stem}``, ``SSH_DATA_ROOT``); a row's ``output`` is relative to it or an absolute URL under it, rows
            without one get ``<prefix>/<id><ext>``; anything else is that row's ``unsafe_output`` error.
        model: ``models:/ssh-harmonizer@champion``, ``models:/name/N``, a ``.safetensors`` checkpoint URL or
            ``pretrained`` (the weights shipped with the package). Default: the ``SSH_MODEL_URI`` setting,
            else the registry's champion when there is one, else the shipped weights.
        overwrite: redo rows whose outputs are up to date.
        max_error_rate: the flow fails when more than this fraction of the rows failed.
        concurrency: model actors (default: one per GPU, else one per CPU, at most 8, and no more than fit in
            memory with images up to the pixel limit: see ``pipeline.batch_inference.plan_actors``).
        num_gpus: GPUs per actor (default: 1 when the Ray cluster has GPUs, else 0).
        jpeg_quality: quality of JPEG and WebP outputs.
        batch_size: rows per actor call.
    """
    log = get_run_logger()
    check_parameters(max_error_rate, jpeg_quality, concurrency, num_gpus, batch_size)
    model_uri = model or default_model_uri()
    if not model:
        log.info(
            "no model given: using %s (%s)",
            model_uri,
            "the weights shipped with the package"
            if model_uri == PRETRAINED_URI
            else "SSH_MODEL_URI or the registry's champion",
        )
    table = load_catalog(catalog, output_prefix)
    resolved = resolve_model(model_uri)
    previous = load_previous_results(table.results_dir)
    options = JobOptions(
        model_uri=model_uri,
        overwrite=overwrite,
        jpeg_quality=jpeg_quality,
        concurrency=concurrency,
        num_gpus=num_gpus,
        batch_size=batch_size,
    )
    outcome = harmonize_rows(table, options, resolved, previous)
    results = publish_results(table.results_dir)
    report = write_report(table, outcome, model_uri)
    summary = outcome.summary
    summary.results_url, summary.report_url = results, report
    log.info("report: %s", report)
    create_link_artifact(
        link=report,
        link_text="harmonize-batch report",
        key="harmonize-batch-report",
        description=f"{summary.ok} ok, {summary.skipped} skipped, {summary.error} errors",
    )
    create_markdown_artifact(
        summary_markdown(summary, catalog, results, report),
        key="harmonize-batch-summary",
        description="harmonize-batch run summary",
    )
    if summary.error_rate > max_error_rate:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(summary.reasons.items()))
        raise ErrorRateExceeded(
            f"{summary.error} of {summary.total} rows failed ({summary.error_rate:.1%}), more than "
            f"max_error_rate {max_error_rate:.1%} ({reasons}); see {results} and {report}"
        )
    log.info(
        "done: %d ok, %d skipped, %d errors of %d rows (error rate %.1f%% <= %.1f%%)",
        summary.ok,
        summary.skipped,
        summary.error,
        summary.total,
        100 * summary.error_rate,
        100 * max_error_rate,
    )
    return summary.as_dict()
