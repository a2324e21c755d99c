"""One Prefect task per host, in parallel, each given one typed job (a frozen dataclass or model, never a dict).

Prefect's `TaskRunner.submit` takes a task's parameters as a dict, which no type checker reads; `run_each`
takes the jobs themselves, checked against the task's one parameter.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import TypeVar

from prefect import Task
from prefect.task_runners import ThreadPoolTaskRunner

J = TypeVar("J")
R = TypeVar("R")


def job_parameter(task: Task[[J], R]) -> str:
    """The name of the task's one parameter (the job).

    Raises:
        TypeError: the task takes other than exactly one parameter.
    """
    names = list(inspect.signature(task.fn).parameters)
    if len(names) != 1:
        raise TypeError(f"task {task.name} takes {names}: a per-host task takes one typed job")
    return names[0]


def run_each(task: Task[[J], R], jobs: Iterable[J], *, max_workers: int) -> list[R]:
    """Runs `task` once per job, at most `max_workers` at a time; the results in the jobs' order."""
    name = job_parameter(task)
    with ThreadPoolTaskRunner(max_workers=max_workers) as runner:
        futures = [runner.submit(task, {name: job}) for job in jobs]
        return [future.result() for future in futures]
