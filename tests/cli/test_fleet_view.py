"""What `fleet status` and `fleet device` print of a device: the cells, decided without a store or a terminal."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Console

from edgefleet.cli.fleet_view import (
    accuracy_notes,
    age,
    device_summary,
    print_device_history,
    status_row,
)
from edgefleet.monitor.drift.accuracy import AccuracyEstimate
from edgefleet.monitor.drift_view import DeviceDrift
from edgefleet.monitor.query import DeviceHistory, DeviceStatus, EventEntry

SEEN = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)


def device(device_id: str = "cam-1", **changes: object) -> DeviceStatus:
    fields: dict[str, object] = {
        "device_id": device_id, "status": "healthy", "reason": "", "model_name": "birds", "model_version": "1.0.0",
        "model_variant": "edgetpu", "backend": "edgetpu:usb:0", "last_seen": SEEN, "age_s": 42.0,
        "latency_p50_ms": 6.0, "latency_p95_ms": 7.25, "fps": 30.0, "window_inferences": 100, "window_errors": 0,
        "cpu_temp_c": 51.0, "mem_total_mb": 1024.0, "mem_available_mb": 512.4, "load_1m": 0.5, "uptime_s": 3600.0,
        "tpu_present": True, "spool_depth": 2, "spool_dropped": 0, "messages": 9, "lost": 1, "duplicates": 0,
        "last_state_event": None, "last_state_event_time": None,
    }
    return DeviceStatus.model_validate({**fields, **changes})


def test_ages_read_in_the_unit_a_person_would_use() -> None:
    assert [age(s) for s in (90.0, 150.0, 7199.0, 9000.0)] == ["90 s ago", "2 min ago", "120 min ago", "2.5 h ago"]


def test_a_status_row_without_a_drift_watch() -> None:
    row = status_row(device(), baseline_blocks=500)
    assert row == ("cam-1", "birds:1.0.0", "edgetpu:usb:0", "42 s ago", "6.0", "7.2", "30.0", "51.0",
                   "[green]healthy[/]", "-", "-")
    failing = status_row(device(status="failing", reason="90% errors", model_version=None, backend=None,
                                fps=None), baseline_blocks=500)
    assert failing[1:3] == ("-", "-") and failing[6] == "-"
    assert failing[8] == "[bold red]failing[/] (90% errors)"


def test_a_status_row_shows_the_drift_in_red_and_the_estimated_accuracy() -> None:
    estimate = AccuracyEstimate(accuracy=0.87, low=0.84, high=0.9, frames=500, unseen_share=0.0)
    drifting = DeviceDrift(status="drift", blocks=600, statistic="score_median", direction="down", effect_sd=-2.4,
                           effect=-0.21, accuracy=estimate)
    row = status_row(device(drift=drifting), baseline_blocks=500)
    assert row[9:] == ("[bold red]drift: score_median down -2.4 SD (-0.21)[/]", "0.87 (0.84-0.90)")
    learning = status_row(device(drift=DeviceDrift(status="baseline", blocks=120)), baseline_blocks=500)
    assert learning[9:] == ("baseline 120/500 blocks", "-")


def test_accuracy_notes_name_each_version_once_in_order() -> None:
    note = DeviceDrift(status="watching", blocks=9, accuracy_note="no calibration table")
    devices = [device("cam-2", model_version="1.1.0", drift=note), device("cam-1", drift=note),
               device("cam-3", drift=note), device("cam-4"), device("cam-5", drift=DeviceDrift(status="watching",
                                                                                              blocks=9))]
    assert accuracy_notes(devices) == ["est. accuracy of birds:1.0.0: no calibration table",
                                       "est. accuracy of birds:1.1.0: no calibration table"]


def test_the_device_summary_rows() -> None:
    rows = dict(device_summary(device(status="stale", reason="no message for 700 s")))
    assert rows["status"] == "[yellow]stale[/] (no message for 700 s)"
    assert rows["model"] == "birds:1.0.0 (edgetpu)"
    assert rows["last seen"] == "2026-12-07 09:30:00 (42 s ago)"
    assert rows["latency p50 / p95 ms"] == "6.0 / 7.2"
    assert rows["memory available / total MB"] == "512 / 1024"
    assert (rows["load 1 min"], rows["Edge TPU present"]) == ("0.50", "yes")
    assert rows["messages / lost / duplicates"] == "9 / 1 / 0"
    assert dict(device_summary(device(model_version=None, load_1m=None)))["model"] == "-"


def test_the_device_history_prints_its_three_tables() -> None:
    console = Console(record=True, width=200)
    event = EventEntry(seq=3, time=SEEN, kind="swap", detail="1.0.0 -> 1.1.0", model_name="birds",
                       model_version="1.1.0")
    print_device_history(console, "cam-1", DeviceHistory(status=device(), versions=(), events=(event,)))
    shown = console.export_text()
    assert "device cam-1" in shown and "model versions (oldest first)" in shown
    assert "swap" in shown and "1.0.0 -> 1.1.0" in shown
