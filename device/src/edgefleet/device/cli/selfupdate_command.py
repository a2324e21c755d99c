"""`edgefleet-agent self-update --config updater.yaml`: one run of the agent updater (`edgefleet.device.selfupdate`),
as root from a systemd timer beside the agent's service."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from edgefleet.device.cli import app
from edgefleet.kernel.console import cli_error
from edgefleet.kernel.errors import EdgefleetError


@app.command("self-update")
def self_update(
    config: Annotated[Path, typer.Option("--config", "-c", help="the updater's YAML (fields of UpdaterConfig: "
                                         "install_dir, status_file, registry, public_key, restart_command...)")],
    as_json: Annotated[bool, typer.Option("--json", help="print the outcome as JSON")] = False,
) -> None:
    """Install the agent the signed agent channel names beside the running one, switch to it, and roll back when
    it does not come up healthy."""
    from edgefleet.device.registry import open_registry_reader
    from edgefleet.device.selfupdate import UpdaterConfig, run_once
    from edgefleet.kernel.configfile import load

    try:
        settings = load(UpdaterConfig, config, what="updater config", missing_fix="pass the updater's YAML",
                        shape_fix="see UpdaterConfig in edgefleet.device.selfupdate")
        registry = open_registry_reader(settings.registry, credentials_file=settings.credentials_file)
        result = run_once(settings, registry)
    except EdgefleetError as error:
        raise cli_error(error) from error
    typer.echo(json.dumps(result.model_dump()) if as_json else f"{result.outcome}: {result.detail}")
    if result.outcome in ("refuse", "rolled-back"):
        raise typer.Exit(code=1)
