"""What `edgefleet fleet status` and `edgefleet fleet device ID` print: the cells (pure, tested on their own)
and the rich tables made of them. The commands and the reading of the fleet state are `edgefleet.cli.fleet`."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from collections.abc import Iterable

    from edgefleet.monitor.aggregates import StatusName
    from edgefleet.monitor.config import MonitorConfig
    from edgefleet.monitor.query import (
        DeviceHistory,
        DeviceStatus,
        EventEntry,
        FleetStatus,
        VersionCount,
        VersionHistoryEntry,
    )

STATUS_STYLE: dict[StatusName, str] = {"healthy": "green", "stale": "yellow", "failing": "bold red"}

DRIFT_CAVEAT = ("drift: the device's own baseline on this version (its first blocks after the activation) "
                "against its blocks since; `edgefleet fleet drift-accept DEVICE` takes the new scene as its "
                "baseline. It sees a changed scene or model output, not whether the answers are right.")

_MINUTE_S = 60.0
_HOUR_S = 3600.0
_IN_UNIT_UP_TO = 2  # "90 s ago", then "3 min ago" from 2 minutes, then "2.5 h ago" from 2 hours


def number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def age(seconds: float) -> str:
    if seconds < _IN_UNIT_UP_TO * _MINUTE_S:
        return f"{seconds:.0f} s ago"
    if seconds < _IN_UNIT_UP_TO * _HOUR_S:
        return f"{seconds / _MINUTE_S:.0f} min ago"
    return f"{seconds / _HOUR_S:.1f} h ago"


def clock_time(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


def _state(device: DeviceStatus) -> str:
    return f"[{STATUS_STYLE[device.status]}]{device.status}[/]" + (f" ({device.reason})" if device.reason else "")


def _drift(device: DeviceStatus, baseline_blocks: int) -> str:
    if device.drift is None:
        return "-"
    text = device.drift.summary(baseline_blocks)
    return f"[bold red]{text}[/]" if device.drift.status == "drift" else text


def status_row(device: DeviceStatus, baseline_blocks: int) -> tuple[str, ...]:
    """One device's cells in the `fleet status` table (`baseline_blocks`: the drift watch's, from the config)."""
    version = f"{device.model_name}:{device.model_version}" if device.model_version else "-"
    accuracy = device.drift.accuracy_text().removeprefix("est. accuracy ") if device.drift else "-"
    return (device.device_id, version, device.backend or "-", age(device.age_s), number(device.latency_p50_ms),
            number(device.latency_p95_ms), number(device.fps), number(device.cpu_temp_c), _state(device),
            _drift(device, baseline_blocks), accuracy)


def accuracy_notes(devices: Iterable[DeviceStatus]) -> list[str]:
    """The estimated accuracy's note of each version a device with a drift watch runs (once each, by version)."""
    notes = {(f"{d.model_name}:{d.model_version}", d.drift.accuracy_note)
             for d in devices if d.drift is not None and d.drift.accuracy_note}
    return [f"est. accuracy of {version}: {note}" for version, note in sorted(notes)]


def _devices_table(result: FleetStatus, baseline_blocks: int) -> Table:
    table = Table(title=f"edgefleet fleet: {result.total} devices, {result.count('healthy')} healthy, "
                        f"{result.count('stale')} stale, {result.count('failing')} failing")
    for column in ("device", "model version", "backend", "last seen"):
        table.add_column(column)
    for column in ("p50 ms", "p95 ms", "fps", "CPU °C"):
        table.add_column(column, justify="right")
    for column in ("status", "drift", "est. accuracy"):
        table.add_column(column)
    for device in result.devices:
        table.add_row(*status_row(device, baseline_blocks))
    return table


def _versions_table(versions: Iterable[VersionCount]) -> Table:
    table = Table(title="version distribution")
    for column in ("model", "version", "devices", "healthy", "stale", "failing"):
        table.add_column(column, justify="left" if column in ("model", "version") else "right")
    for entry in versions:
        table.add_row(entry.model_name or "-", entry.model_version or "(no model)", str(entry.devices),
                      str(entry.healthy), str(entry.stale), str(entry.failing))
    return table


def _print_silent(console: Console, result: FleetStatus) -> None:
    if not result.silent:
        console.print(f"no device silent for more than {result.silent_after_s:.0f} s")
        return
    silent = Table(title=f"silent for more than {result.silent_after_s:.0f} s")
    for column in ("device", "last seen", "model version"):
        silent.add_column(column)
    for device in result.silent:
        silent.add_row(device.device_id, f"{clock_time(device.last_seen)} ({age(device.age_s)})",
                       device.model_version or "-")
    console.print(silent)


def print_fleet_status(console: Console, result: FleetStatus, settings: MonitorConfig) -> None:
    """The `fleet status` tables: the page of devices (with the drift caveats when a device has a drift watch, and
    the labelled spot checks: `edgefleet.cli.fleet_spotcheck`), the version distribution, the silent devices and
    the monitor's counters."""
    from edgefleet.cli.fleet_spotcheck import print_spot_checks

    console.print(_devices_table(result, settings.drift.detector.baseline_blocks))
    if any(device.drift is not None for device in result.devices):
        from edgefleet.monitor.drift_view import ACCURACY_CAVEAT

        console.print(DRIFT_CAVEAT, highlight=False)
        console.print(ACCURACY_CAVEAT, highlight=False)
        for line in accuracy_notes(result.devices):
            console.print(line, highlight=False, soft_wrap=True)
    print_spot_checks(console, result.spot_check)  # the labelled spot check beside the estimate (issue 25)
    if result.next_after is not None:
        console.print(f"{len(result.devices)} of {result.total} shown; next page: --after {result.next_after}")
    console.print(_versions_table(result.versions))
    _print_silent(console, result)
    counters = result.counters
    console.print(f"messages {counters.messages}, duplicates {counters.duplicates}, lost {counters.lost}, "
                  f"malformed {counters.malformed} ({counters.malformed_deliveries} deliveries)")


def device_summary(now: DeviceStatus) -> list[tuple[str, str]]:
    """The (key, value) rows of `fleet device`'s first table: the device's status now."""
    return [
        ("status", _state(now)),
        ("model", f"{now.model_name}:{now.model_version} ({now.model_variant})" if now.model_version else "-"),
        ("backend", now.backend or "-"),
        ("last seen", f"{clock_time(now.last_seen)} ({age(now.age_s)})"),
        ("latency p50 / p95 ms", f"{number(now.latency_p50_ms)} / {number(now.latency_p95_ms)}"),
        ("fps", number(now.fps)),
        ("CPU °C", number(now.cpu_temp_c)),
        ("memory available / total MB", f"{number(now.mem_available_mb, 0)} / {number(now.mem_total_mb, 0)}"),
        ("load 1 min", number(now.load_1m, 2)),
        ("uptime s", number(now.uptime_s, 0)),
        ("Edge TPU present", "yes" if now.tpu_present else "no"),
        ("spool depth / dropped", f"{now.spool_depth} / {now.spool_dropped}"),
        ("messages / lost / duplicates", f"{now.messages} / {now.lost} / {now.duplicates}"),
    ]


def _history_table(versions: Iterable[VersionHistoryEntry]) -> Table:
    table = Table(title="model versions (oldest first)")
    for column in ("model", "version", "variant", "backend", "first seen", "last seen", "messages",
                   "inferences", "errors"):
        table.add_column(column)
    for entry in versions:
        table.add_row(entry.model_name, entry.model_version, entry.variant, entry.backend,
                      clock_time(entry.first_seen), clock_time(entry.last_seen), str(entry.messages),
                      str(entry.inferences), str(entry.errors))
    return table


def _events_table(events: Iterable[EventEntry]) -> Table:
    table = Table(title="events (newest first)")
    for column in ("time", "seq", "event", "version", "detail"):
        table.add_column(column)
    for event in events:
        table.add_row(clock_time(event.time), str(event.seq), event.kind, event.model_version or "-", event.detail)
    return table


def print_device_history(console: Console, device_id: str, history: DeviceHistory) -> None:
    """The `fleet device` tables: its status now, the model versions it ran, its events."""
    summary = Table(title=f"device {device_id}", show_header=False)
    summary.add_column("key")
    summary.add_column("value")
    for key, value in device_summary(history.status):
        summary.add_row(key, value)
    console.print(summary)
    console.print(_history_table(history.versions))
    console.print(_events_table(history.events))
