"""`edgefleet registry agent publish|promote`: the agent's own signed release, for devices that upgrade by
pulling (`edgefleet-agent self-update`; `edgefleet.flows.release.agent`)."""

from __future__ import annotations

import getpass
from datetime import timedelta
from pathlib import Path

import typer

from edgefleet.cli.registry_channels import (
    AllowDevKeyOption,
    RegistryOption,
    SigningBlockOption,
    SigningKeyOption,
    ValidityOption,
    signing_registry,
)
from edgefleet.kernel.console import cli_error
from edgefleet.kernel.errors import EdgefleetError

app = typer.Typer(help="The agent's own releases: publish a wheel with its hashed locks, point a channel at it.",
                  no_args_is_help=True)


@app.command()
def publish(
    wheel: Path = typer.Argument(..., exists=True, dir_okay=False,
                                 help="the edgefleet wheel (pip wheel --no-deps ./device)"),
    version: str = typer.Option(..., "--version", help="the agent version (MAJOR.MINOR.PATCH)"),
    locks: list[Path] = typer.Option([], "--lock", help="a hashed lock (repeat; default: every "
                                     "flows/src/edgefleet/flows/locks/device-py*.txt)"),
    signing_key: Path = SigningKeyOption,
    signing_secret_block: str = SigningBlockOption,
    allow_development_key: bool = AllowDevKeyOption,
    registry_uri: str = RegistryOption,
) -> None:
    """Publish agent/<version>/: the wheel, the locks, the manifest signed by the release key (immutable)."""
    from edgefleet.flows.release.agent import publish_agent

    try:
        registry, key = signing_registry(registry_uri, signing_key, signing_secret_block, allow_development_key)
        result = publish_agent(registry, wheel, version, signing_key=key, locks=list(locks) or None)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    except EdgefleetError as error:
        raise cli_error(error) from error
    typer.echo(f"{'published' if result.created else 'already published'} agent {version} "
               f"(manifest sha256 {result.manifest_sha256})")


@app.command()
def promote(
    version: str = typer.Argument(..., help="a published agent version"),
    channel: str = typer.Option(..., "--channel", "-c", help="the agent channel, e.g. canary or stable"),
    downgrade: bool = typer.Option(False, "--downgrade", help="move the channel to a lower version on purpose"),
    valid_days: float = ValidityOption,
    signing_key: Path = SigningKeyOption,
    signing_secret_block: str = SigningBlockOption,
    allow_development_key: bool = AllowDevKeyOption,
    registry_uri: str = RegistryOption,
) -> None:
    """Point agent/channels/<channel>.json at VERSION (signed by the release key, as model channels are)."""
    from edgefleet.flows.release.agent import promote_agent

    try:
        registry, key = signing_registry(registry_uri, signing_key, signing_secret_block, allow_development_key)
        pointer = promote_agent(registry, version, channel, signing_key=key, downgrade=downgrade,
                                by=f"edgefleet registry agent promote ({getpass.getuser()})",
                                validity=timedelta(days=valid_days))
    except EdgefleetError as error:
        raise cli_error(error) from error
    typer.echo(f"agent channel {channel} -> {pointer.version} (counter {pointer.counter}, valid until "
               f"{pointer.expires_at:%Y-%m-%d %H:%M} UTC)")
