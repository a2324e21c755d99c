"""`edgefleet cloud check OUTPUTS.json`: checks the real Google Cloud project after `pulumi up`.

Read-only, with your own credentials (Application Default Credentials): one line per check, ok or what is wrong
and what to run; exit status 1 when any check fails. The checks are in `edgefleet.infra.cloud_check`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from edgefleet.kernel.console import cli_error
from edgefleet.kernel.errors import EdgefleetError

app = typer.Typer(help="The real Google Cloud project: check it after `pulumi up`.", no_args_is_help=True)
EXIT_FAILED = 1


@app.command("check")
def check(
    outputs_file: Path = typer.Argument(..., help="`pulumi stack output --json > OUTPUTS.json` of the stack"),
) -> None:
    """Check the project against the stack: APIs, topic schema, bucket hardening, roles, dead-lettering, metrics."""
    from google.auth import exceptions as auth_exceptions

    from edgefleet.cli.config import read_stack_outputs
    from edgefleet.infra.cloud_check import default_clients, run_checks

    try:
        outputs = read_stack_outputs(outputs_file)
        clients = default_clients(outputs.project)
    except EdgefleetError as error:
        raise cli_error(error) from error
    except auth_exceptions.DefaultCredentialsError as error:
        raise cli_error(EdgefleetError(
            f"no Google Cloud credentials to check project {outputs.project}: {error}",
            "run `gcloud auth application-default login` with an account that can view the project")) from error
    results = run_checks(clients, outputs)
    for result in results:
        typer.echo(result.line())
    failed = sum(not result.ok for result in results)
    typer.echo(f"{len(results) - failed} ok, {failed} failed")
    if failed:
        raise typer.Exit(EXIT_FAILED)
