"""The row writes of one applied telemetry message (`edgefleet.monitor.ingest` decides which): a new device's
row and snapshot, and the distributions of its inference summary (pending until commit, `pending_rows`): summed
per time bucket, and kept as the message's own window for the drift watch (`drift_feed`)."""

from __future__ import annotations

from typing import Any

from edgefleet.kernel.contracts.distributions import Distributions
from edgefleet.kernel.contracts.telemetry import TelemetryMessage
from edgefleet.monitor.drift_feed import window_row
from edgefleet.monitor.pending_rows import PendingRows


def snapshot_values(message: TelemetryMessage) -> dict[str, object]:
    model, health, inference = message.model, message.health, message.inference
    values: dict[str, object] = {
        "model_name": model.name if model else None,
        "model_version": model.version if model else None,
        "model_variant": model.variant if model else None,
        "backend": model.backend if model else None,
        "cpu_temp_c": health.cpu_temp_c, "uptime_s": health.uptime_s, "mem_total_mb": health.mem_total_mb,
        "mem_available_mb": health.mem_available_mb, "load_1m": health.load_1m,
        "tpu_present": int(health.tpu_present), "spool_depth": health.spool_depth,
        "spool_dropped": health.spool_dropped,
    }
    if inference is not None:
        values["fps"] = inference.fps
    return values


def insert_device(connection: Any, message: TelemetryMessage, when: float, received: float) -> None:
    """The row of a device heard for the first time."""
    values = snapshot_values(message)
    values.update(device_id=message.device_id, first_seen=when, last_seen=when, last_received=received,
                  max_seq=message.seq, messages=1)
    columns = ", ".join(values)
    marks = ", ".join("?" for _ in values)
    connection.execute(f"INSERT INTO devices ({columns}) VALUES ({marks})", tuple(values.values()))


def add_distributions(rows: PendingRows, key: tuple, dist: Distributions) -> None:
    """Adds one summary's distributions to its (device, model, version, time bucket), pending until commit."""
    items = [("latency", item.i, item.n) for item in dist.latency]
    items += [("score", item.i, item.n) for item in dist.score]
    items += [("detections", item.i, item.n) for item in dist.detections]
    items += [("class", item.id, item.n) for item in dist.classes]
    if dist.class_other:
        items.append(("class", -1, dist.class_other))
    for metric, index, n in items:
        if n > 0:
            rows.dists[(*key, metric, index)] += n


def add_window(rows: PendingRows, key: tuple[str, str, str, int], received: float, dist: Distributions) -> None:
    """Keeps one message's distributions as its (device, model, version, seq) window for the drift watch."""
    rows.windows.setdefault(key, window_row(key, received, dist))
