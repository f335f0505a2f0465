"""What the Prefect tasks share: the run logger."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """Prefect's run logger inside a flow or task run (lines reach the Prefect UI), else a plain logger."""
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logger
