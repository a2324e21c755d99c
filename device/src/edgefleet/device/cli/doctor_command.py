"""`edgefleet-agent doctor [--json]`: is this host ready to run the agent (see edgefleet.device.doctor)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from edgefleet.device.cli import app
from edgefleet.device.cli.options import ConfigOption, RootOption
from edgefleet.kernel.console import cli_error
from edgefleet.kernel.errors import EdgefleetError

CONFIG_FILE = "agent.yaml"  # where deploy-agent writes it: <agent root>/agent.yaml
STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red"}


def _config(root: Path | None, config: Path | None):
    """The agent config: --config, else <root>/agent.yaml, else the defaults (a `config` check says which)."""
    from edgefleet.device.agent.config import load_config
    from edgefleet.device.doctor import Check

    root = (root or Path("~/.edgefleet-agent")).expanduser()
    path = config if config is not None else root / CONFIG_FILE
    if config is not None or path.is_file():
        overrides = {} if config is not None else {"root": root}
        return load_config(path, **overrides), Check(name="config", status="ok", detail=str(path))
    return (load_config(None, device_id="unconfigured", model="unconfigured", root=root),
            Check(name="config", status="warn", detail=f"no {path}: the defaults were checked",
                  fix="pass --config agent.yaml (deploy-agent writes <agent root>/agent.yaml)"))


@app.command()
def doctor(
    root: RootOption = None,
    config: ConfigOption = None,
    as_json: bool = typer.Option(False, "--json", help='print {"checks": [{"name", "status", "detail", "fix"}]}'),
) -> None:
    """Check this host for the agent: Python, runtime, libedgetpu, Edge TPUs, permissions, disk, clock, cloud.

    Exit code 1 when a check fails.
    """
    from edgefleet.device.doctor import run_doctor

    try:
        agent_config, config_check = _config(root, config)
        report = run_doctor(agent_config)
    except EdgefleetError as error:
        raise cli_error(error) from error
    report = report.model_copy(update={"checks": (config_check, *report.checks)})
    if as_json:
        typer.echo(json.dumps(report.model_dump(mode="json"), indent=2))
    else:
        table = Table(title="edgefleet-agent doctor")
        for column in ("check", "status", "detail", "fix"):
            table.add_column(column, overflow="fold")
        for check in report.checks:
            table.add_row(check.name, f"[{STYLE[check.status]}]{check.status}[/]", check.detail, check.fix or "")
        Console().print(table)
    if report.failed:
        raise typer.Exit(code=1)
