"""What the demo shows and reports: each step's progress, the closing panel, and the machine-readable
summary (`--summary-json`) with the verdict whether every step went as intended (`edgefleet.demo` runs them).
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from pydantic import BaseModel, Field
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

console = Console()

DEMO_STEPS = 10  # Prefect, stack, release, devices, rollout, release, rollout, bad model, release, rollout
_steps_done = [0]


class ReleaseSummary(BaseModel):
    model: str
    version: str
    published: bool


class RolloutSummary(BaseModel):
    id: str
    version: str
    outcome: Literal["completed", "halted"]
    halted_by: list[str]
    devices_rolled_back: list[str]


class DemoReport(BaseModel):
    """What `--summary-json FILE` writes: the machine-readable account of the run."""

    ok: bool = False
    releases: list[ReleaseSummary] = Field(default_factory=list)
    rollouts: list[RolloutSummary] = Field(default_factory=list)
    devices: dict[str, str] = Field(default_factory=dict, description="device id -> model:version at the end")


SHADOW_HALT = "shadow"
"""The prefix of what a rollout's shadow wave halts it by (`shadow_top1_agreement`, ...)."""


def stopped_by_shadow_wave(rollout: RolloutSummary) -> bool:
    """The rollout halted at its shadow wave: only shadow metrics stopped it and no device had to be rolled back
    (none acted on the version)."""
    return (rollout.outcome == "halted" and bool(rollout.halted_by) and not rollout.devices_rolled_back
            and all(name.startswith(SHADOW_HALT) for name in rollout.halted_by))


def intended(report: DemoReport, good: list[str], bad: str) -> bool:
    """Every step went as intended: the good versions completed, the bad one stopped at its shadow wave before
    any device acted on it, and every device ends on the last good version."""
    outcomes = {rollout.version: rollout for rollout in report.rollouts}
    if any(outcomes.get(version) is None or outcomes[version].outcome != "completed" for version in good):
        return False
    halted = outcomes.get(bad)
    if halted is None or not stopped_by_shadow_wave(halted):
        return False
    return bool(report.devices) and all(value.endswith(f":{good[-1]}") for value in report.devices.values())


@contextmanager
def step(title: str) -> Iterator[None]:
    """One long step: a spinner, the demo's overall progress bar and the elapsed time while it runs."""
    started = time.monotonic()
    columns = (SpinnerColumn(), TextColumn("[bold cyan]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        progress.add_task(title, total=DEMO_STEPS, completed=_steps_done[0])
        yield
    _steps_done[0] += 1
    console.print(f"[green]done[/] {title} [dim]({time.monotonic() - started:.1f} s)[/]")


def print_closing(summary: list[tuple[str, str]], ok: bool, elapsed_s: float, workdir: str,
                  out: Console | None = None) -> None:
    """The closing panel: how long it took, whether it went as intended, what it left (in `workdir`, as the
    user can type it), what to try next. Paths and values are shown as they are (never read as markup)."""
    verdict = ("yes: 1.0.0 and 1.1.0 rolled out, the bad 1.2.0 stopped at its shadow wave on the canary before any "
               "device acted on it" if ok else "NO: see the steps above")
    lines = [("Took", f"{elapsed_s / 60:.1f} minutes"), ("Went as intended", verdict), *summary]
    body = "\n".join(f"[bold]{escape(k)}[/]: {escape(v)}" for k, v in lines)
    (out or console).print(Panel(body + "\n\n" + escape(next_steps(workdir)), title="edgefleet demo: done",
                                 expand=False))


def next_steps(workdir: str) -> str:
    """What to try next with the files the demo left in `workdir` (commands to paste: paths quoted)."""
    def at(path: str) -> str:
        return shlex.quote(f"{workdir}/{path}")

    return f"""Next (the demo's files stay in {workdir} until the next run):
  make ui                       the Prefect UI: run release-model from its form, see the deployments
  source .venv/bin/activate     then:
  edgefleet registry ls --registry {at("registry")}
  edgefleet registry verify shapes 1.1.0 --registry {at("registry")} \\
      --public-key {at("keys/release-signing.key.pub")}
  edgefleet fleet status --db {at("fleet.sqlite")}
  edgefleet-agent inspect {at("registry/models/shapes/1.1.0/model_cpu.tflite")}
  README.md: going to a real Google Cloud project and real Coral devices"""
