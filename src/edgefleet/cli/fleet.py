"""`edgefleet fleet status` and `edgefleet fleet device ID`: the fleet state the monitor keeps; `edgefleet fleet
keys ...`: the device key records (`edgefleet.cli.fleet_keys`); `enrol-token` / `enrol-approve`: enrolment without
SSH (`edgefleet.cli.fleet_enrol`)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from edgefleet.cli.fleet_enrol import enrol_approve
from edgefleet.cli.fleet_enrol import token_app as enrol_token_app
from edgefleet.cli.fleet_keys import app as keys_app
from edgefleet.cli.fleet_view import STATUS_STYLE, print_device_history, print_fleet_status
from edgefleet.kernel.console import cli_error
from edgefleet.kernel.errors import EdgefleetError

if TYPE_CHECKING:
    from edgefleet.monitor.aggregates import StatusName
    from edgefleet.monitor.config import MonitorConfig
    from edgefleet.monitor.query import DeviceHistory, FleetStatus

app = typer.Typer(help="Look at the fleet: every device's status, or one device's history.",
                  no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(enrol_token_app, name="enrol-token")
app.command("enrol-approve")(enrol_approve)
stderr = Console(stderr=True)


def _positive(name: str, value: float | None) -> float | None:
    if value is not None and value <= 0:
        raise typer.BadParameter(f"{name} must be more than 0 seconds, got {value}")
    return value


def store_overrides(db: Path | None, store_url: str | None) -> dict:
    """Config overrides of --db / --store-url (--db is an SQLite file: it wins over a configured URL)."""
    if db is not None and store_url is not None:
        raise typer.BadParameter("pass either --db (an SQLite file) or --store-url, not both")
    if store_url is not None:
        return {"store": {"url": store_url}}
    return {} if db is None else {"store_path": db, "store": {"url": None}}


def _open(config: Path | None, db: Path | None, store_url: str | None = None):
    from edgefleet.monitor import load_monitor_config, open_fleet_store

    settings = load_monitor_config(config, **store_overrides(db, store_url))
    return settings, open_fleet_store(settings, create=False)


_STORE_URL_HELP = "the fleet state's URL (sqlite:///file or postgresql://...), instead of --db"


def main_model(result) -> str | None:
    """The model most devices run now (ties: the first by name), None when no device runs one."""
    counts: dict[str, int] = {}
    for entry in result.versions:
        if entry.model_name:
            counts[entry.model_name] = counts.get(entry.model_name, 0) + entry.devices
    return min(counts, key=lambda name: (-counts[name], name)) if counts else None


def _write_overview(store, result, model: str | None, now: datetime, path: Path) -> None:
    from edgefleet.monitor.overview import fleet_overview
    from edgefleet.monitor.overview_render import to_html

    chosen = model or main_model(result)
    if chosen is None:
        raise EdgefleetError("no device reports a model yet, so there is no overview to draw",
                             "roll a model out first, or name one with --model")
    try:
        path.write_text(to_html(fleet_overview(store, result, chosen, now)))
    except OSError as error:
        raise EdgefleetError(f"cannot write {path}: {error.strerror}", "pass a writable path to --html") from error


@dataclass(frozen=True)
class StatusQuery:
    """What `fleet status` asks for: the thresholds (None: the config's) and the page of devices."""

    stale_after: float | None = None
    silent_after: float | None = None
    version: str | None = None
    status: StatusName | None = None
    tag: str | None = None
    limit: int | None = None
    after: str | None = None
    every: bool = False

    def page_size(self, configured: int) -> int | None:
        """Devices a page: all of them with --all, else --limit, else the config's page size."""
        return None if self.every else (self.limit or configured)


def _now() -> datetime:
    return datetime.fromtimestamp(time.time()).astimezone()


def read_fleet_status(config: Path | None, db: Path | None, store_url: str | None, query: StatusQuery, *,
                      html: Path | None = None, model: str | None = None) -> tuple[MonitorConfig, FleetStatus]:
    """The fleet status the query selects (with the labelled spot check of the devices shown), with the config it
    was read with; the --html overview written."""
    from edgefleet.monitor.aggregates import StatusFilter
    from edgefleet.monitor.query import fleet_status
    from edgefleet.monitor.spotcheck_report import read_spot_check_report

    settings, store = _open(config, db, store_url)
    now = _now()
    with store:
        result = fleet_status(store, query.stale_after or settings.status.stale_after_s, now,
                              silent_after_s=query.silent_after, rules=settings.status,
                              selection=StatusFilter(version=query.version, status=query.status, tag=query.tag),
                              limit=query.page_size(settings.status.page_size), after=query.after)
        # the labelled spot check of the devices shown (issue 25): its lines, --json's spot_check, the page
        result = result.model_copy(update={"spot_check": read_spot_check_report(settings, result.devices)})
        if html is not None:
            _write_overview(store, result, model, now, html)
    return settings, result


def _status_name(only: str | None) -> StatusName | None:
    """--status as the status it names (None: any)."""
    if only is None:
        return None
    for name in STATUS_STYLE:
        if name == only:
            return name
    raise typer.BadParameter(f"--status must be one of {', '.join(STATUS_STYLE)}, got {only!r}")


@app.command()
def status(
    as_json: bool = typer.Option(False, "--json", help="print the fleet status as JSON"),
    stale_after: float = typer.Option(None, "--stale-after", help="seconds without a message before a device "
                                                                  "is stale (default from the config)"),
    silent_after: float = typer.Option(None, "--silent-after", help="seconds without a message before a device "
                                                                    "is listed as silent"),
    config: Path = typer.Option(None, "--config", "-c", help="monitor YAML"),
    db: Path = typer.Option(None, "--db", help="fleet state SQLite file"),
    store_url: str = typer.Option(None, "--store-url", help=_STORE_URL_HELP),
    version: str = typer.Option(None, "--version", help="only devices running this model version"),
    only: str = typer.Option(None, "--status", help="only healthy, stale or failing devices"),
    tag: str = typer.Option(None, "--tag", help="only devices with this tag (`edgefleet fleet tag`)"),
    limit: int = typer.Option(None, "--limit", min=1, help="devices per page (default from the config)"),
    after: str = typer.Option(None, "--after", help="the page after this device id (the previous page's last)"),
    every: bool = typer.Option(False, "--all", help="every selected device on one page"),
    html: Path = typer.Option(None, "--html", help="also write the fleet overview (versions over time, latency "
                                                   "and score distributions per version) to this HTML file"),
    model: str = typer.Option(None, "--model", help="the model of the --html overview (default: the model "
                                                    "most devices run)"),
) -> None:
    """Every device: model version, backend, last seen, latency, fps, CPU temperature, healthy/stale/failing."""
    _positive("--stale-after", stale_after)
    _positive("--silent-after", silent_after)
    query = StatusQuery(stale_after=stale_after, silent_after=silent_after, version=version,
                        status=_status_name(only), tag=tag, limit=limit, after=after, every=every)
    try:
        settings, result = read_fleet_status(config, db, store_url, query, html=html, model=model)
    except EdgefleetError as error:
        raise cli_error(error) from error
    if html is not None:
        stderr.print(f"wrote the fleet overview to {html}", highlight=False, soft_wrap=True)
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    print_fleet_status(Console(), result, settings)


@app.command("drift-accept")
def drift_accept(
    device_id: str = typer.Argument(..., help="the device whose drift (or baseline) is to start anew"),
    config: Path = typer.Option(None, "--config", "-c", help="monitor YAML"),
    db: Path = typer.Option(None, "--db", help="fleet state SQLite file"),
    store_url: str = typer.Option(None, "--store-url", help=_STORE_URL_HELP),
) -> None:
    """Accept a device's new scene: its drift watch collects a new baseline on the version it runs now."""
    from edgefleet.monitor.drift_watch import accept

    try:
        _, store = _open(config, db, store_url)
        with store:
            removed = accept(store, device_id)
    except EdgefleetError as error:
        raise cli_error(error) from error
    if not removed:
        raise cli_error(EdgefleetError(f"device {device_id!r} has no drift watch on the version it runs now",
                                       "check the id with `edgefleet fleet status` (its drift column)"))
    typer.echo(f"{device_id}: a new drift baseline starts with the next complete count bucket")


@app.command("drift-triage")
def drift_triage(
    hours: float = typer.Option(24.0, "--hours", min=1.0, help="the stretch of each device compared (the day)"),
    as_json: bool = typer.Option(False, "--json", help="print the list as JSON"),
    config: Path = typer.Option(None, "--config", "-c", help="monitor YAML"),
    db: Path = typer.Option(None, "--db", help="fleet state SQLite file"),
    store_url: str = typer.Option(None, "--store-url", help=_STORE_URL_HELP),
) -> None:
    """The daily triage list: devices whose day differs from their own baseline (Benjamini-Hochberg across the
    fleet at drift.detector.triage_fdr). A list to look at, not the alarm."""
    from edgefleet.monitor.drift_triage import daily_triage

    try:
        settings, store = _open(config, db, store_url)
        with store:
            entries = daily_triage(store, settings.drift.detector, datetime.now().astimezone(), hours)
    except EdgefleetError as error:
        raise cli_error(error) from error
    if as_json:
        typer.echo(json.dumps([entry.model_dump() for entry in entries], indent=2))
        return
    table = Table(title=f"drift triage: last {hours:g} h against each device's baseline "
                        f"(false discovery rate {settings.drift.detector.triage_fdr:g})")
    for column in ("device", "statistic", "direction", "shift (SD)", "q-value"):
        table.add_column(column)
    for entry in entries:
        table.add_row(entry.device, entry.metric, entry.direction, f"{entry.effect_sd:+.2f}", f"{entry.qvalue:.2g}")
    Console().print(table)


@app.command()
def device(
    device_id: str = typer.Argument(..., help="the device id"),
    as_json: bool = typer.Option(False, "--json", help="print the device's history as JSON"),
    events: int = typer.Option(None, "--events", min=1, help="show at most this many recent events "
                                                             "(default from the config)"),
    stale_after: float = typer.Option(None, "--stale-after", help="seconds without a message before stale"),
    config: Path = typer.Option(None, "--config", "-c", help="monitor YAML"),
    db: Path = typer.Option(None, "--db", help="fleet state SQLite file"),
    store_url: str = typer.Option(None, "--store-url", help=_STORE_URL_HELP),
) -> None:
    """One device: its status now, the model versions it ran, and its events (swaps, rollbacks...)."""
    _positive("--stale-after", stale_after)
    try:
        history = read_device_history(config, db, store_url, device_id, stale_after=stale_after, events=events)
    except EdgefleetError as error:
        raise cli_error(error) from error
    if as_json:
        typer.echo(history.model_dump_json(indent=2))
        return
    print_device_history(Console(), device_id, history)


def read_device_history(config: Path | None, db: Path | None, store_url: str | None, device_id: str, *,
                        stale_after: float | None = None, events: int | None = None) -> DeviceHistory:
    """One device's status now, versions and last `events` events (None: the config's thresholds and count)."""
    from edgefleet.monitor.query import device_history

    settings, store = _open(config, db, store_url)
    with store:
        return device_history(store, device_id, stale_after or settings.status.stale_after_s, _now(),
                              rules=settings.status, event_limit=events or settings.history_events)


@app.command()
def tag(
    device_id: str = typer.Argument(..., help="the device id"),
    add: list[str] = typer.Option([], "--add", help="a tag to give the device (repeatable)"),
    remove: list[str] = typer.Option([], "--remove", help="a tag to take away (repeatable)"),
    config: Path = typer.Option(None, "--config", "-c", help="monitor YAML"),
    db: Path = typer.Option(None, "--db", help="fleet state SQLite file"),
    store_url: str = typer.Option(None, "--store-url", help=_STORE_URL_HELP),
) -> None:
    """Tag a device (e.g. its site or group), so that `fleet status --tag` selects it."""
    from edgefleet.monitor.aggregates import device_tags, set_tags
    from edgefleet.monitor.query import device_status

    try:
        settings, store = _open(config, db, store_url)
        with store:
            device_status(store, device_id, settings.status.stale_after_s,
                          _now())  # an unknown device: a clear error
            set_tags(store.connection, device_id, add=add, remove=remove)
            store.connection.commit()
            tags = device_tags(store.connection, [device_id]).get(device_id, ())
            store.connection.rollback()
    except EdgefleetError as error:
        raise cli_error(error) from error
    typer.echo(f"{device_id}: {', '.join(tags) if tags else 'no tags'}")
