"""`edgefleet-agent shadow MODEL [VERSION | --clear | --show]`: the candidate the agent runs beside the current
model (issue 25, `edgefleet.device.agent.shadow`). The version must be installed first (`edgefleet-agent install`
without --activate); it is verified as an activation would verify it. The agent runs it only with a
`shadow.share` above 0 in its config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from edgefleet.device.agent.report_age import DeviceNow, report_age, stamps_of
from edgefleet.device.cli import app
from edgefleet.device.cli.options import ConfigOption, JsonOption, RootOption
from edgefleet.device.cli.store_commands import ModelArgument, agent_store, echo_json, fail, run_or_exit


def _refuse_without_a_share(store_root: Path, config: Path | None) -> None:
    """A candidate named on an agent whose config runs no shadow would never be run: the rollout's shadow wave
    would wait for pairs until its timeout. Refused here, naming the setting (the agent.yaml --config names,
    else `<root>/agent.yaml` when there is one; without either nothing is known, and nothing is refused)."""
    from edgefleet.device.agent.config import load_config
    from edgefleet.device.cli.doctor_command import CONFIG_FILE

    path = config if config is not None else store_root / CONFIG_FILE
    if config is None and not path.is_file():
        return
    agent = run_or_exit(lambda: load_config(path))
    if agent.shadow.share <= 0:
        fail(f"the agent of {path} runs no shadow candidate: its shadow.share is 0",
             f"set shadow.share (e.g. 0.1) in {path} and restart the agent, or roll out without a shadow wave")


def _report(root: Path) -> dict[str, Any] | None:
    from edgefleet.device.agent.runtime_files import SHADOW_REPORT_FILE, reader_path

    path = reader_path(root, SHADOW_REPORT_FILE)  # the agent's link to its runtime copy, or the file itself
    return json.loads(path.read_text()) if path.is_file() else None


def report_payload(report: dict[str, Any] | None, now: DeviceNow) -> dict[str, Any]:
    """The shadow report and its age for `--json`: `report` as rollouts read it (shadow/1: the agent's boot stamp
    left out, which an older rollout's reader would refuse), `report_age_s` on this device's boot clock
    (`report_age`: None when unknown, e.g. written before the last reboot or stamped ahead of the wall clock),
    `report_age_clock` (boot | wall) and `report_age_note` (why it is unknown, or the wall clock's caveat)."""
    age = report_age(stamps_of(report), now) if report is not None else None
    shown = None if report is None else {key: value for key, value in report.items() if key != "boot"}
    return {"report": shown, "report_age_s": age.seconds if age else None,
            "report_age_clock": age.clock if age else None, "report_age_note": age.note if age else None}


def describe_report(report: dict[str, Any] | None, now: DeviceNow) -> str:
    """The human line of the report: 'report: none', 'report: 3 s old', 'report: age unknown: <why>'."""
    if report is None:
        return "report: none (no agent has written one)"
    age = report_age(stamps_of(report), now)
    return f"report: {age.describe() if age else 'age unknown: it carries no time'}"


@app.command()
def shadow(
    model: ModelArgument,
    version: Annotated[Optional[str], typer.Argument(help="an installed version to run as the shadow")] = None,  # noqa: UP045 - typer on Python 3.9
    clear: Annotated[bool, typer.Option("--clear", help="stop shadowing: remove the shadow pointer")] = False,
    root: RootOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Name an installed version as the shadow candidate (run beside `current` on a share of the frames, never
    acted on), remove it with --clear, or show the agent's shadow report."""
    from edgefleet.device.agent.shadow import clear_shadow, set_shadow, shadow_version

    store = agent_store(root, None, config)
    if clear and version is not None:
        fail("give a VERSION or --clear, not both",
             "edgefleet-agent shadow MODEL VERSION, or edgefleet-agent shadow MODEL --clear")
    if clear:
        removed = run_or_exit(lambda: clear_shadow(store, model))
        payload = {"model": model, "shadow": None, "cleared": removed}
    elif version is not None:
        _refuse_without_a_share(store.root, config)
        installed = run_or_exit(lambda: set_shadow(store, model, version))
        payload = {"model": model, "shadow": installed.version, "manifest_sha256": installed.manifest_sha256}
    else:
        named = run_or_exit(lambda: shadow_version(store, model))
        report, now = _report(store.root), DeviceNow.read()
        payload = {"model": model, "shadow": named.version if named else None, **report_payload(report, now)}
        if not as_json:
            typer.echo(f"{model}: shadow {payload['shadow'] or 'none'}; {describe_report(report, now)}")
            return
    if as_json:
        echo_json(payload)
    else:
        typer.echo(f"{model}: shadow {payload['shadow'] or 'none'}")

