"""`edgefleet ui`: the Prefect UI on this machine with the deployments of prefect.yaml, until Ctrl-C/SIGTERM.

Also runnable as `python -m edgefleet.cli.ui` (the same command, without the rest of the CLI).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from edgefleet.kernel.console import cli_error
from edgefleet.kernel.errors import EdgefleetError

if TYPE_CHECKING:
    from edgefleet.local.ui import LocalPrefectUi, UiSettings

UI_URL_LABEL = "Prefect UI:"
stdout = Console()
stderr = Console(stderr=True)


def _default(name: str) -> object:
    from edgefleet.local.ui import UiSettings

    return UiSettings.model_fields[name].default


def ui(
    port: int = typer.Option(
        None, "--port", "-p", min=0, max=65535, help=f"server port; 0: any free port (default {_default('port')})"
    ),
    host: str = typer.Option(None, "--host", help=f"address the server listens on (default {_default('host')})"),
    project_dir: Path = typer.Option(
        Path("."), "--project-dir", help="the edgefleet checkout holding prefect.yaml (flows run from here)"
    ),
    prefect_file: str = typer.Option(
        None, "--prefect-file", help=f"deployments file in project-dir (default {_default('prefect_file')})"
    ),
    prefect_home: Path = typer.Option(
        None, "--prefect-home", help="Prefect's state directory (default PROJECT_DIR/.edgefleet/prefect)"
    ),
    user_home: bool = typer.Option(
        False, "--user-home", help="use ~/.prefect as PREFECT_HOME (keeps runs with your other Prefect work)"
    ),
    schedules: bool = typer.Option(
        True, "--schedules/--no-schedules", help="let scheduled deployments (promotion) start runs by themselves"
    ),
    log_level: str = typer.Option("INFO", "--log-level", help="DEBUG, INFO, WARNING, ERROR"),
) -> None:
    """Start the Prefect server, a process worker and the deployments of prefect.yaml; stop on Ctrl-C."""
    from edgefleet.local.ui import LocalPrefectUi

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if user_home and prefect_home is not None:
        raise cli_error(EdgefleetError("--user-home and --prefect-home both name a Prefect home", "pass one of them"))
    settings = _settings(project_dir, Path.home() / ".prefect" if user_home else prefect_home, schedules,
                         prefect_file=prefect_file, host=host, port=port)
    _serve(LocalPrefectUi(settings), settings)
    stderr.print("Stopped.")


def _settings(project_dir: Path, prefect_home: Path | None, schedules: bool, *, prefect_file: str | None,
              host: str | None, port: int | None) -> UiSettings:
    """The UI's settings: the options given (None: the default)."""
    from edgefleet.local.ui import UiSettings

    given: dict[str, Any] = {"prefect_file": prefect_file, "host": host, "port": port}
    return UiSettings(project_dir=project_dir.resolve(), prefect_home=prefect_home, run_schedules=schedules,
                      **{name: value for name, value in given.items() if value is not None})


def _serve(stack: LocalPrefectUi, settings: UiSettings) -> None:
    """Starts the stack, shows its deployments and keeps it alive until Ctrl-C (or SIGTERM), then stops it."""
    from edgefleet.local.processes import interruptible

    # SIGTERM behaves as Ctrl-C: whatever is under way (start-up included) unwinds into stop(), which a second
    # Ctrl-C cannot cut short (it is bounded by its own timeouts).
    with interruptible(stack.stop):
        try:
            stderr.print(
                f"Starting Prefect (PREFECT_HOME {settings.home}); logs in {settings.log_dir}",
                highlight=False,
                soft_wrap=True,
            )
            stack.start()
            _show(stack)
            while True:
                stack.check_alive()
                time.sleep(settings.poll_interval_s)
        except KeyboardInterrupt:
            stderr.print("Interrupted: stopping the worker and the server...")
        except EdgefleetError as error:
            raise cli_error(error) from error


def _show(stack) -> None:
    table = Table("deployment", "work pool", title="Deployments")
    for deployment in stack.deployments:
        table.add_row(deployment.full_name, deployment.work_pool or "-")
    stdout.print(table)
    stdout.print(f"{UI_URL_LABEL} {stack.ui_url}", highlight=False, soft_wrap=True)
    stdout.print(
        f"Prefect API: {stack.api_url}  (for the prefect CLI: export PREFECT_API_URL={stack.api_url})",
        highlight=False,
        soft_wrap=True,
    )
    if stack.auth_string is not None:
        stdout.print(
            f"The API requires its auth string: the UI asks for it once (paste the content of "
            f"{stack.settings.auth_string_file}); the CLI: export PREFECT_API_AUTH_STRING=$(cat "
            f"{stack.settings.auth_string_file})",
            highlight=False,
            soft_wrap=True,
        )
    stdout.print(
        "Run one from the UI (Deployments > Run), or: PREFECT_API_URL=... prefect deployment run "
        "release-model/release-model",
        highlight=False,
        soft_wrap=True,
    )
    stdout.print("Press Ctrl-C to stop the worker and the server.")


def register(app: typer.Typer) -> None:
    """Adds the top-level `edgefleet ui` command."""
    app.command("ui")(ui)


if __name__ == "__main__":
    typer.run(ui)
