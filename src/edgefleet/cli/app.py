"""`edgefleet`: the operator CLI (releases, registry, fleet, local stack, config).

Each command group is a module `edgefleet.cli.<group>` (this folder), mounted here by name: a typer `app`
(a sub-command group) or a `register(app)` (top-level commands).
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(name="edgefleet", help="Operate an edgefleet: release models, roll them out, watch the fleet.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

# group name -> module under edgefleet.cli. A module may define `app` (a sub-command group) or
# `register(app)` (top-level commands such as `edgefleet release` or `edgefleet monitor`).
COMMAND_MODULES = ("local", "config", "registry", "keys", "release", "monitor", "fleet", "rollout", "ui", "cloud",
                   "spotcheck")


@app.callback()
def _main() -> None:
    """Always a command group, even while it has one command."""


@app.command()
def version() -> None:
    """Print the edgefleet version."""
    from importlib.metadata import version as installed_version

    typer.echo(installed_version("edgefleet"))


def _mount() -> None:
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"edgefleet.cli.{name}")
        if hasattr(module, "register"):
            module.register(app)
        elif hasattr(module, "app"):
            app.add_typer(module.app, name=name)


_mount()


if __name__ == "__main__":
    app()
