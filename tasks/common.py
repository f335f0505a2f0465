"""What the Prefect tasks share: the run logger and the retry policy of tasks that do storage I/O.

Only tasks that do plain storage I/O retry, and only on transient I/O errors (``ssh_model.errors.is_transient``:
refused or reset connections, unreachable endpoints, timeouts, HTTP 5xx, throttling): a bad catalog or
a missing object will not get better by waiting. Retries back off (``IO_RETRY_DELAYS``) and stop once
``IO_RETRY_BUDGET_S`` have passed since the first try, so an S3 endpoint that is down fails the flow in
well under a minute (s3fs and botocore already retry each call for about 12 s), with one line naming
the endpoint.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from prefect import get_run_logger
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError

from ssh_model.errors import is_transient

logger = logging.getLogger(__name__)


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """Prefect's run logger inside a flow or task run (lines reach the Prefect UI), else a plain logger."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logger


IO_RETRIES = 3
IO_RETRY_DELAYS = [1, 3, 9]  # seconds before the 1st, 2nd and 3rd retry
IO_RETRY_BUDGET_S = 15.0  # no retry starts once this long has passed since the task's first try


def seconds_since_first_try(task_run: Any) -> float:
    started = getattr(task_run, "start_time", None)
    if started is None:
        return 0.0
    return (datetime.now(UTC) - started).total_seconds()


def retry_on_io(task: Any, task_run: Any, state: Any) -> bool:
    """``retry_condition_fn``: retry a transient I/O error while within ``IO_RETRY_BUDGET_S``."""
    return is_transient(getattr(state, "data", None)) and seconds_since_first_try(task_run) < IO_RETRY_BUDGET_S


IO_TASK = {  # the options of every task that does storage I/O: @task(name=..., **IO_TASK)
    "retries": IO_RETRIES,
    "retry_delay_seconds": IO_RETRY_DELAYS,
    "retry_condition_fn": retry_on_io,
    "cache_policy": NO_CACHE,
}
