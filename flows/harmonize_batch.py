"""Flow ``harmonize-batch``: harmonize every composite of a catalog over object storage.

    prefect deployment run harmonize-batch/default -p catalog=s3://bucket/catalog.parquet \\
        -p output_prefix=s3://bucket/harmonized -p 'config={"model_uri": "models:/ssh-harmonizer/3"}'
    ssh-harmonize harmonize-batch s3://bucket/catalog.parquet --output-prefix s3://bucket/harmonized

Validates the catalog, pins the model version, runs the Ray Data job (resumable: a re-run skips
rows already made from the same inputs by the same model), publishes the results table and an
HTML report next to the outputs, and fails only when more than ``max_error_rate`` of the rows failed.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact

from pipeline.configs import BatchConfig
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
def harmonize_batch(catalog: str, output_prefix: str | None = None, config: BatchConfig | None = None) -> dict:
    """Harmonize a catalog of composites.

    Args:
        catalog: URL of a Parquet, CSV or JSONL catalog (columns id, composite, mask, and optionally
            background, reference_mask, target, output).
        output_prefix: the one prefix every output lies under (default ``{data_root}/harmonized/{catalog file
            stem}``, ``SSH_DATA_ROOT``); a row's ``output`` is relative to it or an absolute URL under it, rows
            without one get ``<prefix>/<id><ext>``; anything else is that row's ``unsafe_output`` error.
        config: the model, the actors, the outputs and the failure budget (``pipeline.configs.BatchConfig``).
    """
    log = get_run_logger()
    config = config or BatchConfig()
    model_uri = config.model_uri or default_model_uri()
    if not config.model_uri:
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
    options = config.model_copy(update={"model_uri": model_uri})
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
    if summary.error_rate > config.max_error_rate:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(summary.reasons.items()))
        raise ErrorRateExceeded(
            f"{summary.error} of {summary.total} rows failed ({summary.error_rate:.1%}), more than "
            f"max_error_rate {config.max_error_rate:.1%} ({reasons}); see {results} and {report}"
        )
    log.info(
        "done: %d ok, %d skipped, %d errors of %d rows (error rate %.1f%% <= %.1f%%)",
        summary.ok,
        summary.skipped,
        summary.error,
        summary.total,
        100 * summary.error_rate,
        100 * config.max_error_rate,
    )
    return summary.as_dict()
