"""Every command of both CLIs shows its help: a broken help text (rich markup in it, say) fails here."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from edgefleet.cli import app as operator_app
from edgefleet.device.cli import app as device_app


def command_paths(app: typer.Typer) -> list[tuple[str, ...]]:
    root = typer.main.get_command(app)
    paths: list[tuple[str, ...]] = []

    def walk(command: object, path: tuple[str, ...]) -> None:
        paths.append(path)
        for name, sub in getattr(command, "commands", {}).items():  # groups have sub-commands
            walk(sub, (*path, name))

    walk(root, ())
    return paths


@pytest.mark.parametrize("app", [operator_app, device_app], ids=["edgefleet", "edgefleet-agent"])
def test_every_command_shows_its_help(app):
    runner = CliRunner()
    paths = command_paths(app)
    assert len(paths) > 5
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, f"{' '.join(path)} --help: {result.exception!r}\n{result.output}"
        assert "Usage:" in result.output


@pytest.mark.parametrize("app", [operator_app, device_app], ids=["edgefleet", "edgefleet-agent"])
def test_flags_show_no_value_type_in_help(app):
    """A flag takes no value: its help row is the flag and its text (typer 0.29 printed `--json <bool>` and
    `--help <bool>`, as if each took a value; pyproject.toml keeps typer below 0.29)."""
    runner = CliRunner()
    for path in command_paths(app):
        output = runner.invoke(app, [*path, "--help"], terminal_width=200).output
        assert "<bool>" not in output, f"{' '.join(path)} --help:\n{output}"
