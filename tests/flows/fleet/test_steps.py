"""Step records: each step on a host is timed and recorded, a failure recorded before it is re-raised naming the
step, and hosts' records read as one table."""

from __future__ import annotations

import pytest

from edgefleet.flows.fleet.steps import DETAIL_CHARS, StepFailed, StepRecord, record_step, step_rows
from edgefleet.kernel.errors import ConfigError


def test_a_passing_step_is_recorded_with_its_note() -> None:
    steps: list[StepRecord] = []
    with record_step(steps, "install") as note:
        note.detail = "wheel uploaded"
    (only,) = steps
    assert (only.name, only.ok, only.detail) == ("install", True, "wheel uploaded") and only.seconds >= 0


def test_a_failing_step_is_recorded_then_raised_naming_the_step() -> None:
    steps: list[StepRecord] = []
    error = ConfigError("device cam-1: config_dir /x is inside the agent root /x", "give another config_dir")
    with pytest.raises(StepFailed) as failed, record_step(steps, "config dir"):
        raise error
    assert failed.value.step == "config dir" and failed.value.cause is error
    assert [(s.name, s.ok, s.detail) for s in steps] == [("config dir", False, error.message)]


def test_an_unexpected_error_is_recorded_with_its_type_and_the_detail_is_bounded() -> None:
    steps: list[StepRecord] = []
    with pytest.raises(StepFailed), record_step(steps, "probe"):
        raise ValueError("x" * (DETAIL_CHARS * 2))
    assert steps[0].detail.startswith("ValueError: x") and len(steps[0].detail) == DETAIL_CHARS


def test_the_table_has_one_row_per_step_of_each_host_in_order() -> None:
    a: list[StepRecord] = []
    b: list[StepRecord] = []
    with record_step(a, "connect"):
        pass
    with pytest.raises(StepFailed), record_step(b, "connect"):
        raise OSError("refused")
    rows = step_rows([("cam-1", a), ("cam-2", b)])
    assert [(r["host"], r["step"], r["result"]) for r in rows] == [("cam-1", "connect", "ok"),
                                                                   ("cam-2", "connect", "FAILED")]
    assert rows[1]["detail"] == "OSError: refused"
