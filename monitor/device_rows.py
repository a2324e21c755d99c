"""The row writes of one applied telemetry message (`edgefleet.monitor.ingest` decides which): the device's
snapshot, and the distributions of its inference summary. Inside the open transaction; one SQL text for both
engines."""

from __future__ import annotations

from typing import Any

from edgefleet.kernel.contracts.distributions import Distributions
from edgefleet.kernel.contracts.telemetry import TelemetryMessage


def _snapshot_values(message: TelemetryMessage) -> dict[str, object]:
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
    values = _snapshot_values(message)
    values.update(device_id=message.device_id, first_seen=when, last_seen=when, last_received=received,
                  max_seq=message.seq, messages=1)
    columns = ", ".join(values)
    marks = ", ".join("?" for _ in values)
    connection.execute(f"INSERT INTO devices ({columns}) VALUES ({marks})", tuple(values.values()))


def update_snapshot(connection: Any, message: TelemetryMessage, when: float, received: float, lost: int) -> None:
    """The device's snapshot from a message above its highest seq; `lost` seqs were skipped."""
    values = _snapshot_values(message)
    assignments = ", ".join(f"{column} = ?" for column in values)
    connection.execute(
        f"UPDATE devices SET {assignments}, max_seq = ?, messages = messages + 1, lost = lost + ?, "
        "last_seen = GREATEST(last_seen, ?), last_received = GREATEST(last_received, ?) WHERE device_id = ?",
        (*values.values(), message.seq, lost, when, received, message.device_id))


def add_distributions(connection: Any, device_id: str, model: str, version: str,
                      bucket_start: float, dist: Distributions) -> None:
    """Adds one summary's distributions to its (device, version, time bucket) inside the open transaction."""
    rows = [("latency", item.i, item.n) for item in dist.latency]
    rows += [("score", item.i, item.n) for item in dist.score]
    rows += [("detections", item.i, item.n) for item in dist.detections]
    rows += [("class", item.id, item.n) for item in dist.classes]
    if dist.class_other:
        rows.append(("class", -1, dist.class_other))
    connection.executemany(
        "INSERT INTO dist_counts (device_id, model_name, model_version, bucket_start, metric, key, n) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (model_name, model_version, device_id, bucket_start, metric, key) "
        "DO UPDATE SET n = dist_counts.n + excluded.n",
        [(device_id, model, version, bucket_start, metric, key, n) for metric, key, n in rows if n > 0])
