"""`edgefleet-agent enrol`: ask the fleet to enrol this device with a one-time token (no inbound SSH).

See `edgefleet.device.enrol`: the device makes its key, files a request (create-only) in the registry, and
optionally waits until the approver has written its key record.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgefleet.device.cli import app
from edgefleet.device.cli.options import ConfigOption, RootOption
from edgefleet.kernel.console import cli_error
from edgefleet.kernel.errors import EdgefleetError

ENROL_TOKEN_ENV = "EDGEFLEET_ENROL_TOKEN"


@app.command("enrol")
def enrol(
    config: ConfigOption = None,
    root: RootOption = None,
    device_id: Annotated[str | None, typer.Option("--device-id", help="this device's id (default: the "
                                                     "config's device_id)")] = None,
    registry_uri: Annotated[str | None, typer.Option("--registry", help="the registry (default: the "
                                                        "config's registry.uri)")] = None,
    token_file: Annotated[Path | None, typer.Option("--token-file", help="a file holding the token "
                                                       "`edgefleet fleet enrol-token create` printed")] = None,
    token: Annotated[str | None, typer.Option("--token", envvar=ENROL_TOKEN_ENV, help="the token itself "
                                                 "(prefer --token-file or the environment: argv is visible)")] = None,
    wait_s: Annotated[float, typer.Option("--wait", min=0, help="seconds to wait for the approval (0: file the "
                                          "request and return)")] = 0.0,
) -> None:
    """Ask to be enrolled: make the device key (if none), file the request with the one-time token."""
    from edgefleet.device.agent.config import load_config
    from edgefleet.device.enrol import file_request, read_token_argument, wait_enrolled
    from edgefleet.device.registry import open_registry_reader
    from edgefleet.kernel.contracts.layout import DEFAULT_AGENT_ROOT

    try:
        settings = load_config(config) if config is not None else None
        device = device_id or (settings.device_id if settings else None)
        uri = registry_uri or (settings.registry.uri if settings else None)
        if not device or not uri:
            raise EdgefleetError("enrol needs the device id and the registry",
                                 "pass --config agent.yaml, or --device-id and --registry")
        agent_root = root or (settings.root if settings else Path(DEFAULT_AGENT_ROOT))
        registry = open_registry_reader(uri)
        filed = file_request(registry, agent_root, device, read_token_argument(token, token_file))
        typer.echo(f"{'already filed' if filed.already_filed else 'filed'} enrolment request for {device} "
                   f"(key {filed.key_id}): {filed.location}")
        if wait_s > 0 and not wait_enrolled(registry, device, agent_root, timeout_s=wait_s):
            raise EdgefleetError(f"device {device} was not enrolled within {wait_s:g} s",
                                 "ask the operator to run `edgefleet fleet enrol-approve`, then run enrol again")
    except EdgefleetError as error:
        raise cli_error(error) from error
    if wait_s > 0:
        typer.echo(f"enrolled: the fleet's record for {device} names key {filed.key_id}")
