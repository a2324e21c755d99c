"""`edgefleet local up|down`: the cloud stack's twin on the emulators (see `edgefleet.local.twin`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from edgefleet.kernel.console import cli_error
from edgefleet.kernel.errors import EdgefleetError

if TYPE_CHECKING:
    from edgefleet.local.twin import TwinClients, TwinSettings

R = TypeVar("R")

app = typer.Typer(
    help="Create or remove the local twin of the cloud stack on the emulators.", no_args_is_help=True
)


ProjectOption = Annotated[str | None, typer.Option(help="emulator project id (default: edgefleet-local)")]
BucketOption = Annotated[
    str | None, typer.Option(help="registry bucket on the GCS emulator (default: edgefleet-local-registry)")
]
RegistryDirOption = Annotated[
    Path | None,
    typer.Option(
        help="registry directory when STORAGE_EMULATOR_HOST is not set (default: ~/.edgefleet/registry)"
    ),
]


def _settings(
    project: str | None, bucket: str | None, registry_dir: Path | None, enforce_schema: bool | None
) -> TwinSettings:
    from edgefleet.local.twin import TwinSettings

    values: dict[str, Any] = {  # the given options, each validated by TwinSettings
        key: value
        for key, value in {"project": project, "bucket": bucket, "registry_dir": registry_dir}.items()
        if value is not None
    }
    if enforce_schema is not None:
        values["telemetry"] = TwinSettings().telemetry.model_copy(update={"enforce_schema": enforce_schema})
    return TwinSettings(**values)


def _on_emulators(
    action: Callable[[TwinClients, TwinSettings], R],
    project: str | None,
    bucket: str | None,
    registry_dir: Path | None,
    enforce_schema: bool | None,
) -> tuple[TwinSettings, R]:
    """(the settings the options give, what `action(clients, settings)` returns); an EdgefleetError is shown
    as the CLI shows errors."""
    from edgefleet.local.twin import emulator_clients

    try:
        settings = _settings(project, bucket, registry_dir, enforce_schema)
        return settings, action(emulator_clients(settings.project), settings)
    except EdgefleetError as error:
        raise cli_error(error) from error


@app.command()
def up(
    project: ProjectOption = None,
    bucket: BucketOption = None,
    registry_dir: RegistryDirOption = None,
    schema: Annotated[
        bool | None,
        typer.Option(
            "--schema/--no-schema", help="attach the Avro schema to the topic (default: as the cloud stack)"
        ),
    ] = None,
) -> None:
    """Create the telemetry topics, schema, subscriptions and the registry on the emulators (idempotent)."""
    from edgefleet.local.twin import twin_up

    settings, state = _on_emulators(twin_up, project, bucket, registry_dir, schema)
    typer.echo(f"project                  {state.project}")
    typer.echo(f"telemetry topic          {state.topic}")
    typer.echo(f"  schema                 {state.schema or '(none: the topic does not validate messages)'}")
    typer.echo(
        f"monitor subscription     {state.monitor_subscription} "
        f"(dead-letters after {settings.telemetry.dead_letter_max_attempts} attempts)"
    )
    typer.echo(f"dead-letter topic        {state.dead_letter_topic}")
    typer.echo(f"dead-letter subscription {state.dead_letter_subscription}")
    typer.echo(f"registry                 {state.registry_uri}")


@app.command()
def down(
    project: ProjectOption = None, bucket: BucketOption = None, registry_dir: RegistryDirOption = None
) -> None:
    """Remove what `edgefleet local up` created (a non-empty registry directory is kept)."""
    from edgefleet.local.twin import twin_down

    _, removed = _on_emulators(twin_down, project, bucket, registry_dir, None)
    for name in removed:
        typer.echo(f"removed {name}")
    if not removed:
        typer.echo("nothing to remove")
