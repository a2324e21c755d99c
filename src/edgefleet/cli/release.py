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

from edgefleet.cli.refusals import refusals_told_once
from edgefleet.kernel.console import cli_error
from edgefleet.kernel.errors import EdgefleetError

NATIVE_LOG = "tensorflow.log"  # in the release's work_dir
ConfigOption = typer.Option(..., "--config", "-c", help="release YAML (fields of ReleaseParams)")


def release(
    config: Path = ConfigOption,
    version: str = typer.Option(None, "--version", help="override the version in the config"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON instead of the report"),
) -> None:
    """Train, quantize, evaluate, compile, gate, sign and publish a model as described in CONFIG."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from edgefleet.flows.release.native_logs import native_logs_to
    from edgefleet.flows.release.params import load_params

    try:
        params = _with_version(load_params(config), version)
        # TensorFlow's native log lines go to the work directory (it is imported with the flow).
        with native_logs_to(Path(params.work_dir).expanduser() / NATIVE_LOG), refusals_told_once():
            from edgefleet.flows.release.flow import release_model

            result = release_model(params)
    except EdgefleetError as error:  # a refusal: its message and fix, whole, once (no markup read from them)
        raise cli_error(error, "release failed") from error
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    Console().print(Markdown(result.report))


def _with_version(params, version: str | None):  # noqa: ANN001, ANN202 - ReleaseParams
    from pydantic import ValidationError

    from edgefleet.flows.release.params import ReleaseParams

    if version is None:
        return params
    try:
        return ReleaseParams.model_validate({**params.model_dump(), "version": version})
    except ValidationError as error:
        raise typer.BadParameter(error.errors()[0]["msg"], param_hint="--version") from error


def register(app: typer.Typer) -> None:
    """Adds `edgefleet release` to the operator CLI."""
    app.command("release")(release)
