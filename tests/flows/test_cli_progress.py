"""The command line's progress bars, fed by the progress lines the jobs log."""

import io
import logging
import os
import subprocess
import sys

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


SCRIPT = """
import io
from rich.console import Console
from flows.cli_progress import progress_bars

out = io.StringIO()
with progress_bars(Console(file=out, force_terminal=True, width=100)):
    from prefect import flow, get_run_logger  # first imported here, as in a CLI flow command
    from ssh_model.progress import progress_line

    @flow
    def counting():
        get_run_logger().info("progress %s", progress_line(3, 4, 1.0))

    counting()
print("bar:", [line for line in out.getvalue().splitlines() if "3/4" in line][-1:])
"""


def test_given_a_fresh_process_when_a_flow_logs_progress_inside_the_bars_then_a_bar_shows_it(tmp_path):
    # Prefect's first logging set-up would drop handlers attached before it: this runs the real sequence
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)  # a temporary server of its own

    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=240, env=env)

    assert done.returncode == 0, done.stderr[-2000:]
    assert "rows" in done.stdout and "3/4" in done.stdout, done.stdout + done.stderr[-2000:]
