"""`edgefleet monitor`: run the fleet monitor until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import typer
from rich.console import Console

from edgefleet.cli.fleet import store_overrides
from edgefleet.kernel.console import cli_error
from edgefleet.kernel.errors import EdgefleetError

stderr = Console(stderr=True)



def monitor(
    config: Path = typer.Option(None, "--config", "-c", help="monitor YAML (or an edgefleet config with a "
                                                           "`monitor:` section)"),
    project: str = typer.Option(None, "--project", help="Google Cloud project of the subscription"),
    subscription: str = typer.Option(None, "--subscription", help="the fleet-monitor subscription"),
    db: Path = typer.Option(None, "--db", help="fleet state SQLite file (default ~/.edgefleet/fleet.sqlite)"),
    store_url: str = typer.Option(None, "--store-url", help="the fleet state's URL (sqlite:///file or "
                                                            "postgresql://...), instead of --db"),
    log_level: str = typer.Option("INFO", help="DEBUG, INFO, WARNING, ERROR"),
) -> None:
    """Read fleet telemetry from Pub/Sub into the fleet state until SIGTERM/SIGINT, then stop cleanly."""
    from edgefleet.monitor.config import load_monitor_config
    from edgefleet.monitor.service import run_monitor

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    try:
        settings = load_monitor_config(config, project=project, subscription=subscription,
                                       **store_overrides(db, store_url))
    except EdgefleetError as error:
        raise cli_error(error) from error
    previous = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        report = run_monitor(settings, stop)
    except EdgefleetError as error:
        raise cli_error(error) from error
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    typer.echo(f"monitor stopped: {report.received} messages received, {report.applied + report.late} applied, "
               f"{report.duplicates} duplicates, {report.malformed} malformed deliveries, {report.lost} lost "
               f"(net), {report.resubscribes} resubscribes")


def register(app: typer.Typer) -> None:
    """Adds the top-level `edgefleet monitor` command."""
    app.command("monitor")(monitor)
