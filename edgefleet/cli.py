"""`edgefleet`: the operator CLI (releases, registry, fleet, local stack, config)."""

from __future__ import annotations

import typer

app = typer.Typer(name="edgefleet", help="Operate an edgefleet: release models, roll them out, watch the fleet.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@app.command()
def version() -> None:
    """Print the edgefleet version."""
    from edgefleet import __version__

    typer.echo(__version__)
