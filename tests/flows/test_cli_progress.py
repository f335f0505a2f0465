"""The command line's progress bars, fed by the progress lines the jobs log."""

import io
import logging

from rich.console import Console
from rich.progress import Progress

from flows.cli_progress import ProgressBars
from ssh_model.progress import progress_line
from ssh_model.train import step_line


def record(message: str) -> logging.LogRecord:
    return logging.LogRecord("prefect.flow_runs", logging.INFO, __file__, 1, message, None, None)


def test_given_progress_lines_when_logged_then_each_unit_gets_a_bar_at_the_latest_count():
    progress = Progress(console=Console(file=io.StringIO()))
    bars = ProgressBars(progress)

    bars.emit(record(f"progress {progress_line(3, 40, 1.5)}: ok 3, skipped 0, error 0"))
    bars.emit(record(f"ingest: {progress_line(7, 9, 2.0, 'photos')}"))
    bars.emit(record(f"progress {progress_line(12, 40, 4.0)}: ok 12, skipped 0, error 0"))
    bars.emit(record(step_line(20, 600, {"total": 0.5, "recon": 0.2, "harm": 0.3}, 1e-4, 10.0, 60.0)))
    bars.emit(record("catalog of 40 rows, 2/3 of them new"))  # not a progress line

    shown = {task.description: (task.completed, task.total) for task in progress.tasks}
    assert shown == {"rows": (12, 40), "photos": (7, 9), "steps": (20, 600)}
