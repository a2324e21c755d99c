"""Step records: what ran on which host, and how it ended, in a form a user reads (and a Prefect table shows).

Every flow that reaches hosts (rollout, deploy-agent) records each step it takes on a host as a `StepRecord`
(`record_step` times it and notes its result; a failure is recorded, then re-raised as `StepFailed` naming the
step). `step_rows` turns hosts' records into the rows of one table artifact.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict

from edgefleet.kernel.errors import EdgefleetError

DETAIL_CHARS = 500  # a step's detail is a message for a table cell, not a log


def utc_now() -> datetime:
    return datetime.now(UTC)


class StepRecord(BaseModel):
    """One step on one host."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    ok: bool
    started_at: datetime
    seconds: float
    detail: str = ""


class StepFailed(Exception):
    """A host step failed: which step, and the error it raised (`cause`)."""

    def __init__(self, step: str, cause: BaseException) -> None:
        super().__init__(f"{step}: {cause}")
        self.step = step
        self.cause = cause


@dataclass
class StepNote:
    """What a step says about itself when it passes (shown in the record's step list)."""

    detail: str = ""


def error_detail(error: BaseException) -> str:
    """How a failed step's record reads: the project error's message, else the exception's type and text."""
    text = error.message if isinstance(error, EdgefleetError) else f"{type(error).__name__}: {error}"
    return text[:DETAIL_CHARS]


@contextmanager
def record_step(steps: list[StepRecord], name: str) -> Iterator[StepNote]:
    """Times the step `name` and appends its record to `steps`; a failure is recorded (its message as the
    detail) and re-raised as `StepFailed(name, cause)`."""
    started_at, started = utc_now(), time.perf_counter()
    note = StepNote()
    try:
        yield note
    except Exception as error:
        steps.append(StepRecord(name=name, ok=False, started_at=started_at, seconds=time.perf_counter() - started,
                                detail=error_detail(error)))
        raise StepFailed(name, error) from error
    steps.append(StepRecord(name=name, ok=True, started_at=started_at, seconds=time.perf_counter() - started,
                            detail=note.detail[:DETAIL_CHARS]))


def step_rows(hosts: Iterable[tuple[str, Iterable[StepRecord]]]) -> list[dict[str, str]]:
    """One table row per step (host, step, result, seconds, detail), hosts in the given order. Pure."""
    return [{"host": host, "step": step.name, "result": "ok" if step.ok else "FAILED",
             "seconds": f"{step.seconds:.1f}", "detail": step.detail}
            for host, steps in hosts for step in steps]
