"""`edgefleet fleet status` and `edgefleet fleet device ID`: the fleet state the monitor keeps; `edgefleet fleet
keys ...`: the device key records (`edgefleet.cli.fleet_keys`); `enrol-token` / `enrol-approve`: enrolment without
SSH (`edgefleet.cli.fleet_enrol`)."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from edgefleet.cli.fleet_enrol import enrol_approve
from edgefleet.cli.fleet_enrol import token_app as enrol_token_app
from edgefleet.cli.fleet_keys import app as keys_app
from edgefleet.kernel.console import cli_error
from edgefleet.kernel.errors import EdgefleetError

if TYPE_CHECKING:
    from edgefleet.monitor.aggregates import StatusName

app = typer.Typer(help="Look at the fleet: every device's status, or one device's history.",
                  no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(enrol_token_app, name="enrol-token")
app.command("enrol-approve")(enrol_approve)
stderr = Console(stderr=True)

_STATUS_STYLE: dict[StatusName, str] = {"healthy": "green", "stale": "yellow", "failing": "bold red"}



def _positive(name: str, value: float | None) -> float | None:
    if value is not None and value <= 0:
        raise typer.BadParameter(f"{name} must be more than 0 seconds, got {value}")
    return value


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


_MINUTE_S = 60.0
_HOUR_S = 3600.0
_IN_UNIT_UP_TO = 2  # "90 s ago", then "3 min ago" from 2 minutes, then "2.5 h ago" from 2 hours


def _age(seconds: float) -> str:
    if seconds < _IN_UNIT_UP_TO * _MINUTE_S:
        return f"{seconds:.0f} s ago"
    if seconds < _IN_UNIT_UP_TO * _HOUR_S:
        return f"{seconds / _MINUTE_S:.0f} min ago"
    return f"{seconds / _HOUR_S:.1f} h ago"


def _time(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


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
    from edgefleet.monitor.aggregates import StatusFilter
    from edgefleet.monitor.query import fleet_status

    _positive("--stale-after", stale_after)
    _positive("--silent-after", silent_after)
    if only is not None and only not in _STATUS_STYLE:
        raise typer.BadParameter(f"--status must be one of {', '.join(_STATUS_STYLE)}, got {only!r}")
    try:
        settings, store = _open(config, db, store_url)
        now = datetime.fromtimestamp(time.time()).astimezone()
        with store:
            result = fleet_status(store, stale_after or settings.status.stale_after_s, now,
                                  silent_after_s=silent_after, rules=settings.status,
                                  selection=StatusFilter(version=version, status=only, tag=tag),
                                  limit=None if every else (limit or settings.status.page_size), after=after)
            if html is not None:
                _write_overview(store, result, model, now, html)
    except EdgefleetError as error:
        raise cli_error(error) from error
    if html is not None:
        stderr.print(f"wrote the fleet overview to {html}", highlight=False, soft_wrap=True)
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    console = Console()
    table = Table(title=f"edgefleet fleet: {result.total} devices, {result.count('healthy')} healthy, "
                        f"{result.count('stale')} stale, {result.count('failing')} failing")
    for column in ("device", "model version", "backend", "last seen"):
        table.add_column(column)
    for column in ("p50 ms", "p95 ms", "fps", "CPU °C"):
        table.add_column(column, justify="right")
    table.add_column("status")
    table.add_column("drift")
    table.add_column("est. accuracy")
    for device in result.devices:
        version = f"{device.model_name}:{device.model_version}" if device.model_version else "-"
        style = _STATUS_STYLE[device.status]
        table.add_row(device.device_id, version, device.backend or "-", _age(device.age_s),
                      _number(device.latency_p50_ms), _number(device.latency_p95_ms), _number(device.fps),
                      _number(device.cpu_temp_c), f"[{style}]{device.status}[/]"
                      + (f" ({device.reason})" if device.reason else ""), _drift(device, settings),
                      device.drift.accuracy_text().removeprefix("est. accuracy ") if device.drift else "-")
    console.print(table)
    if any(device.drift is not None for device in result.devices):
        from edgefleet.monitor.drift_view import ACCURACY_CAVEAT

        console.print(DRIFT_CAVEAT, highlight=False)
        console.print(ACCURACY_CAVEAT, highlight=False)
        for version, note in sorted({(f"{d.model_name}:{d.model_version}", d.drift.accuracy_note)
                                     for d in result.devices if d.drift is not None and d.drift.accuracy_note}):
            console.print(f"est. accuracy of {version}: {note}", highlight=False, soft_wrap=True)
    from edgefleet.cli.fleet_spotcheck import print_spot_checks

    print_spot_checks(console, settings, result.devices)  # the labelled spot check beside the estimate (issue 25)
    if result.next_after is not None:
        console.print(f"{len(result.devices)} of {result.total} shown; next page: --after {result.next_after}")
    versions = Table(title="version distribution")
    for column in ("model", "version", "devices", "healthy", "stale", "failing"):
        versions.add_column(column, justify="left" if column in ("model", "version") else "right")
    for entry in result.versions:
        versions.add_row(entry.model_name or "-", entry.model_version or "(no model)", str(entry.devices),
                         str(entry.healthy), str(entry.stale), str(entry.failing))
    console.print(versions)
    if result.silent:
        silent = Table(title=f"silent for more than {result.silent_after_s:.0f} s")
        for column in ("device", "last seen", "model version"):
            silent.add_column(column)
        for device in result.silent:
            silent.add_row(device.device_id, f"{_time(device.last_seen)} ({_age(device.age_s)})",
                           device.model_version or "-")
        console.print(silent)
    else:
        console.print(f"no device silent for more than {result.silent_after_s:.0f} s")
    counters = result.counters
    console.print(f"messages {counters.messages}, duplicates {counters.duplicates}, lost {counters.lost}, "
                  f"malformed {counters.malformed} ({counters.malformed_deliveries} deliveries)")


DRIFT_CAVEAT = ("drift: the device's own baseline on this version (its first blocks after the activation) "
                "against its blocks since; `edgefleet fleet drift-accept DEVICE` takes the new scene as its "
                "baseline. It sees a changed scene or model output, not whether the answers are right.")


def _drift(device, settings) -> str:  # noqa: ANN001 - query.DeviceStatus, monitor.config.MonitorConfig
    if device.drift is None:
        return "-"
    text = device.drift.summary(settings.drift.detector.baseline_blocks)
    return f"[bold red]{text}[/]" if device.drift.status == "drift" else text


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
    from edgefleet.monitor.query import device_history

    _positive("--stale-after", stale_after)
    try:
        settings, store = _open(config, db, store_url)
        with store:
            history = device_history(store, device_id, stale_after or settings.status.stale_after_s,
                                     datetime.fromtimestamp(time.time()).astimezone(), rules=settings.status,
                                     event_limit=events or settings.history_events)
    except EdgefleetError as error:
        raise cli_error(error) from error
    if as_json:
        typer.echo(history.model_dump_json(indent=2))
        return
    console = Console()
    now = history.status
    summary = Table(title=f"device {device_id}", show_header=False)
    summary.add_column("key")
    summary.add_column("value")
    style = _STATUS_STYLE[now.status]
    rows = [
        ("status", f"[{style}]{now.status}[/]" + (f" ({now.reason})" if now.reason else "")),
        ("model", f"{now.model_name}:{now.model_version} ({now.model_variant})" if now.model_version else "-"),
        ("backend", now.backend or "-"),
        ("last seen", f"{_time(now.last_seen)} ({_age(now.age_s)})"),
        ("latency p50 / p95 ms", f"{_number(now.latency_p50_ms)} / {_number(now.latency_p95_ms)}"),
        ("fps", _number(now.fps)),
        ("CPU °C", _number(now.cpu_temp_c)),
        ("memory available / total MB", f"{_number(now.mem_available_mb, 0)} / {_number(now.mem_total_mb, 0)}"),
        ("load 1 min", _number(now.load_1m, 2)),
        ("uptime s", _number(now.uptime_s, 0)),
        ("Edge TPU present", "yes" if now.tpu_present else "no"),
        ("spool depth / dropped", f"{now.spool_depth} / {now.spool_dropped}"),
        ("messages / lost / duplicates", f"{now.messages} / {now.lost} / {now.duplicates}"),
    ]
    for key, value in rows:
        summary.add_row(key, value)
    console.print(summary)
    versions = Table(title="model versions (oldest first)")
    for column in ("model", "version", "variant", "backend", "first seen", "last seen", "messages",
                   "inferences", "errors"):
        versions.add_column(column)
    for entry in history.versions:
        versions.add_row(entry.model_name, entry.model_version, entry.variant, entry.backend,
                         _time(entry.first_seen), _time(entry.last_seen), str(entry.messages),
                         str(entry.inferences), str(entry.errors))
    console.print(versions)
    table = Table(title="events (newest first)")
    for column in ("time", "seq", "event", "version", "detail"):
        table.add_column(column)
    for event in history.events:
        table.add_row(_time(event.time), str(event.seq), event.kind, event.model_version or "-", event.detail)
    console.print(table)


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
                          datetime.fromtimestamp(time.time()).astimezone())  # an unknown device: a clear error
            set_tags(store.connection, device_id, add=add, remove=remove)
            store.connection.commit()
            tags = device_tags(store.connection, [device_id]).get(device_id, ())
            store.connection.rollback()
    except EdgefleetError as error:
        raise cli_error(error) from error
    typer.echo(f"{device_id}: {', '.join(tags) if tags else 'no tags'}")
