"""What one bulk harmonization run did: the summary (counts, error reasons, mean metrics) built as
records stream in, and the HTML report of a run (thumbnails first, then the errors)."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import numpy as np

from pipeline.results import METRICS_COLUMN, REPORTED_METRICS, metric_columns
from ssh_model.images import decode_image
from ssh_model.report import ReportRow, render_report


@dataclass
class RunSummary:
    total: int
    ok: int = 0
    skipped: int = 0
    error: int = 0
    seconds: float = 0.0
    model_version: str = ""
    results_url: str = ""
    report_url: str = ""
    reasons: dict[str, int] = field(default_factory=dict)
    mean_metrics: dict[str, float] = field(default_factory=dict)

    @property
    def done(self) -> int:
        return self.ok + self.skipped + self.error

    @property
    def error_rate(self) -> float:
        return self.error / self.total if self.total else 0.0

    @property
    def rows_per_s(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "done": self.done, "error_rate": self.error_rate, "rows_per_s": self.rows_per_s}


class SummaryBuilder:
    """Counts, error reasons and metric sums, accumulated as records stream in (constant memory)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.sums: dict[str, float] = {}
        self.samples: Counter[str] = Counter()

    def add(self, records: Iterable[dict]) -> None:
        for record in records:
            self.counts[record["status"]] += 1
            if record["status"] == "error":
                self.reasons[record["reason"]] += 1
            elif record.get(METRICS_COLUMN):
                for name, value in json.loads(record[METRICS_COLUMN]).items():
                    if value is not None and math.isfinite(value):
                        self.sums[name] = self.sums.get(name, 0.0) + value
                        self.samples[name] += 1

    def build(self, total: int, seconds: float, model_version: str) -> RunSummary:
        return RunSummary(
            total=total,
            ok=self.counts["ok"],
            skipped=self.counts["skipped"],
            error=self.counts["error"],
            seconds=seconds,
            model_version=model_version,
            reasons=dict(self.reasons),
            mean_metrics={name: self.sums[name] / self.samples[name] for name in metric_columns(self.sums)},
        )


def summarize(records: list[dict], total: int, seconds: float, model_version: str) -> RunSummary:
    """Counts, error reasons and mean metrics (over rows that did not fail) of one run's records."""
    builder = SummaryBuilder()
    builder.add(records)
    return builder.build(total, seconds, model_version)


def _decode_thumb(data: bytes | None, is_mask: bool) -> np.ndarray | None:
    if not data:
        return None
    image = decode_image(data, "thumbnail")
    return image[..., 0].astype(np.float32) / 255.0 if is_mask else image


def render_job_report(
    title: str,
    records: list[dict],
    thumbnails: dict[str, dict[str, bytes]],
    summary: RunSummary,
    extra: dict[str, object] | None = None,
    max_error_rows: int = 200,
) -> str:
    """The HTML report: rows with thumbnails first (catalog order), then up to ``max_error_rows`` errors."""
    rows = []
    shown = set()
    for record in records:
        thumbs = thumbnails.get(record["id"])
        if not thumbs:
            continue
        shown.add(record["id"])
        metrics = json.loads(record[METRICS_COLUMN]) if record.get(METRICS_COLUMN) else {}
        images = {name: _decode_thumb(data, name == "mask") for name, data in thumbs.items()}
        shown_metrics = {k: v for k, v in metrics.items() if k.rsplit("_", 1)[-1] in REPORTED_METRICS}
        rows.append(
            ReportRow(
                id=record["id"],
                images=images,
                metrics=shown_metrics,
                status=record["status"],
                note=record.get("error") or "",
            )
        )
    errors = [r for r in records if r["status"] == "error" and r["id"] not in shown][:max_error_rows]
    rows += [ReportRow(id=r["id"], images={}, status="error", note=f"{r['reason']}: {r['error']}") for r in errors]
    facts: dict[str, object] = dict(extra or {})
    facts.update(
        {
            "rows": summary.total,
            "ok": summary.ok,
            "skipped": summary.skipped,
            "errors": summary.error,
            "error rate": f"{summary.error_rate:.1%}",
            "model version": summary.model_version,
            "seconds": f"{summary.seconds:.1f}",
            "rows/s": f"{summary.rows_per_s:.2f}",
        }
    )
    if summary.reasons:
        facts["error reasons"] = ", ".join(f"{k}: {v}" for k, v in sorted(summary.reasons.items()))
    for name, value in summary.mean_metrics.items():
        if name.rsplit("_", 1)[-1] in REPORTED_METRICS:
            facts[f"mean {name}"] = f"{value:.3f}"
    return render_report(title, rows, facts)
