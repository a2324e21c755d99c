"""A refusal is told once: its message and fix, whole (`refusals_told_once`).

A flow that refuses (an `EdgefleetError`: a float model, a bad config) fails its task and flow run, and
Prefect logs each failure with its traceback and the whole message again before the CLI prints it. Inside
`refusals_told_once()` Prefect's failure records of the runs are held back: when an `EdgefleetError` leaves
the block, the CLI prints it (`cli_error`) and they are dropped; anything else (a bug) gets them logged as
Prefect wrote them, tracebacks included.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from edgefleet.kernel.errors import EdgefleetError

RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")
FAILED_STATE = "Finished in state Failed"  # how Prefect reports a run's end (INFO for a flow run)


class _HoldFailures(logging.Filter):
    """Keeps back the records of a failing run (errors, and the Failed state) instead of letting them out."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR or record.getMessage().startswith(FAILED_STATE):
            self.held.append(record)
            return False
        return True


@contextmanager
def refusals_told_once() -> Iterator[None]:
    """Holds back Prefect's failure records of the runs inside; drops them for an `EdgefleetError` (see module)."""
    hold = _HoldFailures()
    loggers = [logging.getLogger(name) for name in RUN_LOGGERS]
    for logger in loggers:
        logger.addFilter(hold)
    refused = False
    try:
        yield
    except EdgefleetError:
        refused = True
        raise
    finally:
        for logger in loggers:
            logger.removeFilter(hold)
        if not refused:
            for record in hold.held:
                logging.getLogger(record.name).handle(record)
