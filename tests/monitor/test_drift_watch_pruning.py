"""The drift watch forgets the rows of devices and versions no longer there (issue 25 leftovers): a row with no
window for `drift.forget_after_s` is deleted, unless it is the version its device runs now and the device was
heard within that time. Both engines; times given (no clock)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from edgefleet.monitor.drift_watch import read_rows, tick
from edgefleet.monitor.ingest import apply
from edgefleet.monitor.store import commit, to_epoch

from .monitor_helpers import T0, telemetry
from .test_drift_watch import CONFIG, window

FORGET_DAYS = 3
PRUNING = CONFIG.model_copy(update={"forget_after_s": FORGET_DAYS * 86_400.0})


def send(store, device_id: str, version: str, first_seq: int, minutes: range, rng: np.random.Generator,
         inference: bool = True) -> None:
    """One message a minute from `minutes` on (with a window, or a heartbeat without inference)."""
    for offset, minute in enumerate(minutes):
        message = telemetry(device_id, first_seq + offset, at=T0 + timedelta(minutes=minute), count=100,
                            version=version, inference=inference)
        if message.inference is not None:
            message = message.model_copy(update={"inference": message.inference.model_copy(
                update={"dist": window(rng, 0.8)})})
        apply(store, message)
    commit(store)


def _watched(store) -> set[tuple[str, str, str]]:
    rows = set(read_rows(store.connection, ["retired", "swapped", "idle"]))
    store.connection.commit()
    return rows


def test_retired_devices_and_superseded_versions_are_forgotten_idle_current_ones_kept(store) -> None:
    rng = np.random.default_rng(31)
    day = 24 * 60
    for device_id in ("retired", "swapped", "idle"):
        send(store, device_id, "1.0.0", 1, range(0, 10), rng)
    send(store, "swapped", "2.0.0", 11, range(10, 20), rng)  # superseded 1.0.0
    tick(store, PRUNING, to_epoch(T0 + timedelta(minutes=30)))
    assert len(_watched(store)) == 4

    # Days later: "swapped" still sends on 2.0.0, "idle" is heard (no frames to count), "retired" is silent.
    later = FORGET_DAYS * day + 60
    send(store, "swapped", "2.0.0", 21, range(later, later + 5), rng)
    send(store, "idle", "1.0.0", 11, range(later, later + 5), rng, inference=False)
    tick(store, PRUNING, to_epoch(T0 + timedelta(minutes=later + 10)))
    assert _watched(store) == {("swapped", "mobilenet", "2.0.0"), ("idle", "mobilenet", "1.0.0")}


def test_nothing_is_forgotten_before_its_time(store) -> None:
    rng = np.random.default_rng(32)
    send(store, "retired", "1.0.0", 1, range(0, 10), rng)
    send(store, "swapped", "1.0.0", 1, range(0, 10), rng)
    send(store, "swapped", "2.0.0", 11, range(10, 20), rng)
    tick(store, PRUNING, to_epoch(T0 + timedelta(minutes=FORGET_DAYS * 24 * 60 - 60)))
    assert len(_watched(store)) == 3
