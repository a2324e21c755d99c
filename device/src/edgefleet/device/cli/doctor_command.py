"""`edgefleet-agent doctor [--json]`: is this host ready to run the agent (see edgefleet.device.doctor)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from edgefleet.device.cli import app
from edgefleet.device.cli.options import ConfigOption, RootOption
from edgefleet.kernel.console import cli_error
from edgefleet.kernel.errors import EdgefleetError
from edgefleet.kernel.findings import Finding, Status, print_findings

if TYPE_CHECKING:
    from edgefleet.device.agent.config import AgentConfig

CONFIG_FILE = "agent.yaml"  # where deploy-agent writes it: <agent root>/agent.yaml
DEFAULT_ROOT = Path("~/.edgefleet-agent")
TITLE = "edgefleet-agent doctor"


def _config(root: Path | None, config: Path | None) -> tuple[AgentConfig, Finding]:
    """The agent config: --config, else <root>/agent.yaml, else the defaults (a `config` check says which)."""
    from edgefleet.device.agent.config import load_config

    root = (root or DEFAULT_ROOT).expanduser()
    path = config if config is not None else root / CONFIG_FILE
    if config is not None or path.is_file():
        overrides = {} if config is not None else {"root": root}
        return load_config(path, **overrides), Finding(name="config", status=Status.OK, detail=str(path))
    return (load_config(None, device_id="unconfigured", model="unconfigured", root=root),
            Finding(name="config", status=Status.WARN, detail=f"no {path}: the defaults were checked",
                    fix="pass --config agent.yaml (deploy-agent writes <agent root>/agent.yaml)"))


@app.command()
def doctor(
    root: RootOption = None,
    config: ConfigOption = None,
    as_json: bool = typer.Option(False, "--json", help='print {"checks": [{"name", "status", "detail", "fix"}], '
                                 '"tpu_required"} (what a rollout\'s preflight reads)'),
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
        # The report, not the bare list: a rollout's preflight reads `tpu_required` with the checks (and agents in
        # the field print this shape), so doctor's JSON stays an object whose `checks` are the findings.
        typer.echo(report.model_dump_json(indent=2))
    else:
        print_findings(report.checks, title=TITLE)
    if report.failed:
        raise typer.Exit(code=1)
