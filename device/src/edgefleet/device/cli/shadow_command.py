"""`edgefleet-agent shadow MODEL [VERSION | --clear | --show]`: the candidate the agent runs beside the current
model (issue 25, `edgefleet.device.agent.shadow`). The version must be installed first (`edgefleet-agent install`
without --activate); it is verified as an activation would verify it. The agent runs it only with a
`shadow.share` above 0 in its config.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

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


def report_age_s(report: dict[str, Any] | None, now: datetime) -> float | None:
    """Seconds since the agent last rewrote `report`, on this device's clock (the reader's clock may differ);
    None without a report. An old report means its agent has stopped writing it (stopped, crash-looping)."""
    if report is None or not report.get("updated_at"):
        return None
    updated = datetime.fromisoformat(str(report["updated_at"]).replace("Z", "+00:00"))
    return max(0.0, (now - updated).total_seconds())


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
        report = _report(store.root)
        payload = {"model": model, "shadow": named.version if named else None, "report": report,
                   "report_age_s": report_age_s(report, datetime.now(timezone.utc))}
    if as_json:
        echo_json(payload)
    else:
        typer.echo(f"{model}: shadow {payload['shadow'] or 'none'}")

