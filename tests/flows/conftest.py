"""Fixtures of the flow tests."""

import logging

import pytest

from tests.pipeline.batch_cases import tiny_model_url  # noqa: F401 - a fixture


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def run_logs():
    """Messages of Prefect's flow- and task-run loggers during the test."""
    handler = ListHandler()
    loggers = [logging.getLogger(name) for name in ("prefect.flow_runs", "prefect.task_runs")]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler.messages
    for logger in loggers:
        logger.removeHandler(handler)
