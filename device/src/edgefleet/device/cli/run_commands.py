"""`edgefleet-agent run` and `edgefleet-agent status`."""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from edgefleet.device.cli import app
from edgefleet.device.cli.options import ConfigOption, JsonOption, RootOption
from edgefleet.kernel.console import cli_error
from edgefleet.kernel.errors import EdgefleetError

stderr = Console(stderr=True)



@app.command()
def run(
    config: Path = typer.Option(..., "--config", "-c", help="agent.yaml"),
    log_level: str = typer.Option("INFO", help="DEBUG, INFO, WARNING, ERROR"),
) -> None:
    """Run the inference loop until SIGTERM/SIGINT; then drain queues and telemetry and exit."""
    from edgefleet.device.agent.config import load_config
    from edgefleet.device.agent.loop import Agent

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    try:
        agent = Agent(load_config(config))
    except EdgefleetError as error:
        raise cli_error(error) from error
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: stop.set())
    try:
        code = agent.run(stop)
    except EdgefleetError as error:
        raise cli_error(error) from error
    raise typer.Exit(code=code)


@app.command()
def status(
    root: RootOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Print the running agent's status (from its status file)."""
    from edgefleet.device.agent.config import load_config
    from edgefleet.device.agent.runtime_files import reader_path
    from edgefleet.kernel.contracts.layout import DEFAULT_AGENT_ROOT, STATUS_FILE
    from edgefleet.kernel.contracts.status import LoopCounters, read_status

    try:
        if config is not None:
            path = load_config(config).status_path
        else:  # <root>/status.json: the file, or the agent's link to its copy in the runtime directory
            path = reader_path((root or Path(DEFAULT_AGENT_ROOT)).expanduser(), STATUS_FILE)
        current = read_status(path)
    except EdgefleetError as error:
        raise cli_error(error) from error
    if as_json:
        typer.echo(json.dumps(current.model_dump(mode="json"), indent=2))
        return
    table = Table(title=f"edgefleet agent {current.device_id}", show_header=False)
    fields = current.model_dump(mode="json").items()
    for key, value in sorted(fields, key=lambda field: field[0] in LoopCounters.model_fields):  # who, then numbers
        table.add_row(key, "" if value is None else str(value))
    Console().print(table)


@app.command("device-key")
def device_key(
    root: RootOption = None,
) -> None:
    """Print this device's public key (base64), making the device key first if it has none.

    The private key (`<root>/keys/device.key`, mode 0600) never leaves the device; `deploy-agent` reads this
    output and publishes the public key with the fleet, so the monitor accepts this device's telemetry.
    """
    from edgefleet.device.trust.device_identity import load_or_create_device_key, public_key_text
    from edgefleet.kernel.contracts.layout import DEFAULT_AGENT_ROOT

    try:
        key = load_or_create_device_key(root or Path(DEFAULT_AGENT_ROOT))
    except EdgefleetError as error:
        raise cli_error(error) from error
    typer.echo(public_key_text(key.public_key()))
