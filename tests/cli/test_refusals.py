"""`refusals_told_once`: Prefect's failure records of a run are dropped for a refusal (the CLI prints it once)
and logged as they were for anything else (a bug keeps its traceback)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from edgefleet.cli.refusals import refusals_told_once
from edgefleet.kernel.errors import EdgefleetError

TASK_RUNS = "prefect.task_runs"
FLOW_RUNS = "prefect.flow_runs"


class Recorded(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def recorded() -> Iterator[list[logging.LogRecord]]:
    """What reaches the handlers of Prefect's run loggers (whatever Prefect's logging config does)."""
    handler = Recorded()
    loggers = [logging.getLogger(name) for name in (TASK_RUNS, FLOW_RUNS)]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    yield handler.records
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)


def _fail_like_prefect(error: Exception) -> None:
    logger = logging.getLogger(TASK_RUNS)
    logger.info("Beginning task run")
    try:
        raise error
    except Exception:
        logger.error("Task run failed with exception: %r", error, exc_info=True)
    logging.getLogger(FLOW_RUNS).info("Finished in state Failed('Flow run encountered an exception')")
    raise error


def test_a_refusal_drops_the_failure_records(recorded: list[logging.LogRecord]) -> None:
    with pytest.raises(EdgefleetError), refusals_told_once():
        _fail_like_prefect(EdgefleetError("not fully integer-quantized", "quantize it"))

    assert [record.getMessage() for record in recorded] == ["Beginning task run"]


def test_any_other_error_keeps_prefects_account_with_its_traceback(recorded: list[logging.LogRecord]) -> None:
    with pytest.raises(ZeroDivisionError), refusals_told_once():
        _fail_like_prefect(ZeroDivisionError("a bug"))

    messages = [record.getMessage() for record in recorded]
    assert messages[0] == "Beginning task run" and len(messages) == 3
    assert messages[1].startswith("Task run failed") and recorded[1].exc_info is not None
    assert messages[2].startswith("Finished in state Failed")
    logging.getLogger(TASK_RUNS).error("after the block")  # the filter is gone
    assert recorded[-1].getMessage() == "after the block"


def test_a_missing_rollout_is_named_whole(tmp_path) -> None:
    """`rollout show` of a rollout a registry lacks: the registry is named as typed (Rich markup ate `[...]`)."""
    from typer.testing import CliRunner

    from edgefleet.cli import app

    registry = tmp_path / "registry[lab]"
    registry.mkdir()
    result = CliRunner().invoke(app, ["rollout", "show", "cam-1.0.0", "--registry", str(registry)])
    assert result.exit_code == 2
    assert f"no rollout cam-1.0.0 in {registry}" in result.output
