"""Rich progress bars for the flow commands of ``ssh-harmonize``, drawn from the progress lines the jobs log.

The jobs say how far they are in one format (``ssh_model.progress.progress_line``: "12/40 rows (30%), ...";
training's ``step_line``: "step 20/600 loss ..."), to Prefect's run logs and the UI. On a terminal the
command line also draws those lines as one live bar per unit (rows, photos, shards, steps) below the log,
so the jobs need no second way to report progress.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn

PROGRESS = re.compile(r"(?:^|\s)(?P<done>\d+)/(?P<total>\d+) (?P<unit>\w+) \(\d+%\)|^step (?P<step>\d+)/(?P<steps>\d+) ")
RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


class ProgressBars(logging.Handler):
    """Updates a bar per unit from each progress line logged; other records are left to the other handlers."""

    def __init__(self, progress: Progress) -> None:
        super().__init__(logging.INFO)
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}

    def emit(self, record: logging.LogRecord) -> None:
        found = PROGRESS.search(record.getMessage())
        if not found:
            return
        if found["step"]:
            unit, done, total = "steps", int(found["step"]), int(found["steps"])
        else:
            unit, done, total = found["unit"], int(found["done"]), int(found["total"])
        if unit not in self.tasks:
            self.tasks[unit] = self.progress.add_task(unit, total=total)
        self.progress.update(self.tasks[unit], completed=done, total=total)


@contextmanager
def progress_bars(console: Console | None = None) -> Iterator[None]:
    """Show bars while the block runs, when the output is a terminal (else nothing changes)."""
    console = console or Console(stderr=True)
    if not console.is_terminal:
        yield
        return
    # deferred (only commands that run a flow pay for Prefect): Prefect's first logging set-up replaces its
    # loggers' handlers, later ones only adjust them, so it is done before the bars attach
    from prefect.logging.configuration import setup_logging

    setup_logging()
    columns = [TextColumn("{task.description:>7}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, TimeRemainingColumn(), console=console) as progress:
        handler = ProgressBars(progress)
        loggers = [logging.getLogger(name) for name in RUN_LOGGERS]
        for logger in loggers:
            logger.addHandler(handler)
        try:
            yield
        finally:
            for logger in loggers:
                logger.removeHandler(handler)
