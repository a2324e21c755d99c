"""The cached latency window of each device (`store.refresh_device_windows`, one SQL statement) is
`stats.window_stats` of the samples kept for the version it runs, on both engines."""

from __future__ import annotations

import random

from monitor_helpers import telemetry

from edgefleet.monitor.ingest import handle
from edgefleet.monitor.stats import window_stats
from edgefleet.monitor.store import commit, window_samples


def _send(store, message, index: int) -> None:
    handle(store, message.to_json_bytes(), f"m-{index}", {"device_id": message.device_id}, 1000.0 + index)


def test_the_cached_window_is_window_stats_of_the_kept_samples(store):
    rng = random.Random(23)
    index = 0
    for device in range(6):
        device_id = f"cam-{device}"
        for seq in rng.sample(range(1, 20), 12):  # late arrivals and more samples than the window keeps
            count = rng.choice([0, 1, 3, 8])
            errors = count if device == 4 else rng.randint(0, count)  # cam-4: every inference failed
            latency = rng.choice([2.5, 4.0, 4.0, 7.25, 11.0])  # ties in value
            _send(store, telemetry(device_id, seq, version="1.1.0" if seq > 15 and device == 2 else "1.0.0",
                                   latency_ms=latency, p95_ms=latency * rng.choice([1.0, 1.5]), count=count,
                                   errors=errors), index)
            index += 1
        commit(store)  # some devices' windows refreshed again after more samples
    _send(store, telemetry("cam-9", 1, model=None), index)
    commit(store)
    rows = store.connection.execute(
        "SELECT device_id, model_name, model_version, latency_p50_ms, latency_p95_ms, window_inferences, "
        "window_errors, error_ratio FROM devices ORDER BY device_id").fetchall()
    assert len(rows) == 7
    for device_id, model, version, p50, p95, inferences, errors, ratio in rows:
        stats = window_stats(window_samples(store.connection, device_id, model or "", version or ""))
        expected_ratio = stats.error_ratio if (stats.inferences or stats.errors) else None
        assert (p50, p95, inferences, errors, ratio) == (
            stats.latency_p50_ms, stats.latency_p95_ms, stats.inferences, stats.errors, expected_ratio), device_id
    assert any(row[3] is None and row[5] for row in rows), "a device whose every inference failed has no latency"
