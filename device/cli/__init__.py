"""`edgefleet-agent`: the device CLI.

Each command group lives in its own module and registers itself on `app`.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="edgefleet-agent",
    help="The edgefleet device agent: inspect and run models, verify and activate versions, run the loop.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main() -> None:
    """Always a command group, even while it has one command."""

# Command modules register on `app` when imported; keep the imports at the bottom.
from edgefleet.device.cli import model_commands, run_commands, store_commands  # noqa: E402,F401
