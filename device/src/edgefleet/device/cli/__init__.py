"""`edgefleet-agent`: the device CLI.

Each command group lives in its own module and registers itself on `app`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any, ForwardRef

import typer

from edgefleet.device.grpc_fork import disable_grpc_fork_handlers

disable_grpc_fork_handlers()  # before anything imports grpc: the agent forks while its Pub/Sub channel is busy


def resolve_annotations(function: Callable[..., Any]) -> Callable[..., Any]:
    """Evaluates a command's string annotations (PEP 563) in place on Python 3.9.

    Typer evaluates them itself only on Python 3.10+; on 3.9 it would read `Annotated[bool,
    typer.Option("--json")]` as a bare string and lose the option's name. `X | None` is evaluated with
    eval_type_backport, as pydantic does.
    """
    if sys.version_info >= (3, 10):
        return function
    # Installed only on Python 3.9 (a dependency with that marker), so imported by name; its function is this.
    eval_type_backport: Callable[..., Any] = importlib.import_module("eval_type_backport").eval_type_backport

    function.__annotations__ = {
        name: eval_type_backport(ForwardRef(value), function.__globals__, None, try_default=False)
        if isinstance(value, str) else value
        for name, value in function.__annotations__.items()
    }
    return function


class _Typer(typer.Typer):
    """typer.Typer whose commands read their annotations the same way on Python 3.9 to 3.13."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        register = super().command(*args, **kwargs)
        return lambda function: register(resolve_annotations(function))


app = _Typer(
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
from edgefleet.device.cli import (  # noqa: E402
    doctor_command,
    enrol_command,
    model_commands,
    run_commands,
    selfupdate_command,
    shadow_command,
    store_commands,
)

__all__ = [
    "app", "doctor_command", "enrol_command", "model_commands", "resolve_annotations", "run_commands",
    "selfupdate_command", "shadow_command", "store_commands",
]
