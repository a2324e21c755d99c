"""How every edgefleet command line reports a user error: what is wrong and the fix, on stderr, exit 2.

Shared by `edgefleet-agent` and `edgefleet`, so a user sees one format everywhere.
"""

from __future__ import annotations

from collections.abc import Generator
from contextlib import contextmanager

import typer
from rich.console import Console

from edgefleet.kernel.errors import EdgefleetError

ERROR_EXIT_CODE = 2


def print_error(message: str, fix: str | None = None, *, label: str = "error",
                console: Console | None = None) -> None:
    """Prints `label: message` and `fix: ...` to stderr (no markup or highlighting taken from the text)."""
    console = console or Console(stderr=True, highlight=False, soft_wrap=True)
    console.print(f"[bold red]{label}:[/] ", end="")
    console.print(message, markup=False)
    if fix:
        console.print("[bold]fix:[/] ", end="")
        console.print(fix, markup=False)


def cli_error(error: EdgefleetError, label: str = "error") -> typer.Exit:
    """Prints `error` and returns the exit to raise: `raise cli_error(error) from error`."""
    print_error(error.message, error.fix, label=label)
    return typer.Exit(code=ERROR_EXIT_CODE)


@contextmanager
def exit_on_error(console: Console | None = None) -> Generator[None, None, None]:
    """Turns an `EdgefleetError` raised inside into the printed error and exit code 2."""
    try:
        yield
    except EdgefleetError as error:
        print_error(error.message, error.fix, console=console)
        raise typer.Exit(ERROR_EXIT_CODE) from error
