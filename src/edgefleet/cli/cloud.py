"""`edgefleet cloud check OUTPUTS.json`: checks the real Google Cloud project after `pulumi up`.

Read-only, with your own credentials (Application Default Credentials): one finding per check, ok or what is
wrong and what to run (a table, or `--json`: the list of findings); exit status 1 when any check fails. The checks
are in `edgefleet.infra.cloud_check`.
Before the first `pulumi up` (no outputs yet), `edgefleet cloud check --project P` checks only the APIs that
must be on first and says which is missing.

The clients are the context object when the caller gives one (`CliRunner().invoke(app, ..., obj=clients)`,
Click's own way to hand a command its dependencies), else the real ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from edgefleet.kernel.console import cli_error
from edgefleet.kernel.errors import EdgefleetError
from edgefleet.kernel.findings import failures, print_findings

if TYPE_CHECKING:
    from edgefleet.infra.cloud_clients import CloudClients

app = typer.Typer(help="The real Google Cloud project: check it after `pulumi up`.", no_args_is_help=True)
EXIT_FAILED = 1


@app.command("check")
def check(
    ctx: typer.Context,
    outputs_file: Path | None = typer.Argument(None, help="`pulumi stack output --json > OUTPUTS.json` of the stack"),
    project: str | None = typer.Option(None, "--project", help="before the first `pulumi up`: check only the "
                                       "APIs it needs enabled first, in this project"),
    as_json: bool = typer.Option(False, "--json", help='print the findings as JSON: [{"name", "status", "detail", '
                                 '"fix"}]'),
) -> None:
    """Check the project against the stack: prerequisites, APIs, topic schema, bucket, roles, dead-lettering,
    metrics (with --project and no outputs: the prerequisites of a first `pulumi up`)."""
    from edgefleet.cli.config import read_stack_outputs
    from edgefleet.infra.cloud_check import check_prerequisites, run_checks

    try:
        outputs = read_stack_outputs(outputs_file) if outputs_file is not None else None
        target = outputs.project if outputs is not None else project
        if target is None:
            raise EdgefleetError("nothing to check: no stack outputs and no project",
                                 "pass OUTPUTS.json (`pulumi stack output --json > OUTPUTS.json`), or "
                                 "--project P before the first `pulumi up`")
        clients = _clients(ctx, target)
    except EdgefleetError as error:
        raise cli_error(error) from error
    results = [check_prerequisites(clients.service_usage, target)] if outputs is None else run_checks(clients, outputs)
    print_findings(results, title=f"edgefleet cloud check: {target}", as_json=as_json)
    failed = failures(results)
    if outputs is None and not failed and not as_json:
        typer.echo("run `pulumi up`, then check the project with its outputs: edgefleet cloud check OUTPUTS.json")
    if failed:
        raise typer.Exit(EXIT_FAILED)


def _clients(ctx: typer.Context, project: str) -> CloudClients:
    """The context's clients when the caller gave some, else the real ones (Application Default Credentials).

    Raises:
        EdgefleetError: no credentials, with how to get them.
    """
    from google.auth import exceptions as auth_exceptions

    from edgefleet.infra.cloud_clients import CloudClients, default_clients

    if isinstance(ctx.obj, CloudClients):
        return ctx.obj
    try:
        return default_clients(project)
    except auth_exceptions.DefaultCredentialsError as error:
        raise EdgefleetError(
            f"no Google Cloud credentials to check project {project}: {error}",
            "run `gcloud auth application-default login` with an account that can view the project") from error
