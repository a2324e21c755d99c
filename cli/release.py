"""`edgefleet release --config release.yaml`: run the release-model flow from the command line.

With no Prefect server configured (PREFECT_API_URL unset) Prefect runs the flow on its embedded, ephemeral
API; with one, the run shows in its UI like any other.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console
from rich.markdown import Markdown

from edgefleet.kernel.errors import EdgefleetError

stderr = Console(stderr=True)
ConfigOption = typer.Option(..., "--config", "-c", help="release YAML (fields of ReleaseParams)")


def release(
    config: Path = ConfigOption,
    version: str = typer.Option(None, "--version", help="override the version in the config"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON instead of the report"),
) -> None:
    """Train, quantize, evaluate, compile, gate, sign and publish a model as described in CONFIG."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from pydantic import ValidationError

    from edgefleet.flows.release.flow import release_model
    from edgefleet.flows.release.params import ReleaseParams, load_params

    try:
        params = load_params(config)
        if version is not None:
            try:
                params = ReleaseParams.model_validate({**params.model_dump(), "version": version})
            except ValidationError as error:
                raise typer.BadParameter(error.errors()[0]["msg"], param_hint="--version") from error
        result = release_model(params)
    except EdgefleetError as error:
        stderr.print(f"[bold red]release failed:[/] {error.message}")
        if error.fix:
            stderr.print(f"[bold]fix:[/] {error.fix}")
        raise typer.Exit(code=2) from error
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    Console().print(Markdown(result.report))


def register(app: typer.Typer) -> None:
    """Adds `edgefleet release` to the operator CLI."""
    app.command("release")(release)
