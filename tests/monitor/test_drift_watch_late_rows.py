"""The drift watch and late telemetry (issue 25 leftovers): a device's spooled windows arriving hours after an
outage (the agent never loses telemetry, so this is normal) are fed to the sequential detector one window at a
time in the device's seq order, never lumped into the minute they arrived in, never skipped and never twice; a
window older than what the detector already took (its seq at or below the watermark) is counted as late, not
fed out of order. Both engines; times given (no clock)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from edgefleet.monitor.drift_feed import late_windows
from edgefleet.monitor.drift_watch import read_rows, tick
from edgefleet.monitor.ingest import apply
from edgefleet.monitor.query import device_status
from edgefleet.monitor.store import commit, to_epoch

from .monitor_helpers import T0, telemetry
from .test_drift_watch import BASELINE, CONFIG, window

SERIES = ("cam", "mobilenet", "1.0.0")


def send(store, rng: np.random.Generator, seqs: range | list[int], received_minute: float | None = None,
         score: float = 0.8) -> None:
    """Windows `seqs` of the device (window seq at minute seq - 1 by its clock), received at their own minute
    or all at `received_minute` (a spool drained after an outage)."""
    for seq in seqs:
        at = T0 + timedelta(minutes=seq - 1)
        message = telemetry("cam", seq, at=at, count=100)
        assert message.inference is not None
        received = to_epoch(T0 + timedelta(minutes=received_minute if received_minute is not None else seq - 1))
        apply(store, message.model_copy(update={"inference": message.inference.model_copy(
            update={"dist": window(rng, score)})}), received_at=received)
    commit(store)


def _row(store):
    row = read_rows(store.connection, ["cam"])[SERIES]
    store.connection.commit()
    return row


def at_minute(minute: float) -> float:
    return to_epoch(T0 + timedelta(minutes=minute))


def test_a_spool_drained_after_an_outage_is_fed_window_by_window_not_as_one_block(store) -> None:
    rng = np.random.default_rng(21)
    send(store, rng, range(1, BASELINE + 11))  # live: baseline and 10 more
    tick(store, CONFIG, at_minute(BASELINE + 12))
    assert _row(store).status == "watching" and _row(store).blocks == BASELINE + 10

    # Three hours offline: 180 windows spooled, all received within the minute the device came back.
    back = BASELINE + 200
    send(store, rng, range(BASELINE + 11, BASELINE + 191), received_minute=back)
    tick(store, CONFIG, at_minute(back + 2))
    row = _row(store)
    assert row.blocks == BASELINE + 190  # 180 blocks of 100 frames, as if they had come live
    assert late_windows(store.connection, SERIES) == 0


def test_a_window_committed_after_its_minute_was_read_is_not_skipped(store) -> None:
    rng = np.random.default_rng(23)
    send(store, rng, range(1, BASELINE + 11))
    tick(store, CONFIG, at_minute(BASELINE + 12))
    # Received (and stamped) in minute BASELINE + 11, committed only after the tick that read that minute.
    tick(store, CONFIG, at_minute(BASELINE + 13))
    send(store, rng, [BASELINE + 11], received_minute=BASELINE + 11)
    tick(store, CONFIG, at_minute(BASELINE + 14))
    assert _row(store).blocks == BASELINE + 11


def test_a_window_older_than_the_watermark_is_counted_late_not_fed_out_of_order(store) -> None:
    rng = np.random.default_rng(24)
    send(store, rng, range(1, BASELINE + 11))
    send(store, rng, range(BASELINE + 21, BASELINE + 31))  # seqs BASELINE + 11..20 are missing for now
    tick(store, CONFIG, at_minute(BASELINE + 32))
    assert _row(store).blocks == BASELINE + 20

    send(store, rng, range(BASELINE + 11, BASELINE + 21), received_minute=BASELINE + 40)  # they come after all
    send(store, rng, range(BASELINE + 11, BASELINE + 21), received_minute=BASELINE + 41)  # and once more
    tick(store, CONFIG, at_minute(BASELINE + 45))
    assert _row(store).blocks == BASELINE + 20  # not fed behind newer blocks
    assert late_windows(store.connection, SERIES) == 10  # counted once each (the redelivery is a duplicate)
    shown = device_status(store, "cam", 10**9, T0 + timedelta(minutes=BASELINE + 45)).drift
    assert shown is not None and shown.late_windows == 10  # `fleet status` shows them
    store.connection.commit()
    pending = store.connection.execute("SELECT COUNT(*) FROM drift_windows").fetchone()[0]
    store.connection.commit()
    assert pending == 0  # nothing left behind


def test_while_baselining_late_windows_join_the_baseline_in_seq_order(store) -> None:
    rng = np.random.default_rng(25)
    send(store, rng, range(1, 21))
    send(store, rng, range(31, BASELINE + 1))  # seqs 21..30 are missing for now
    tick(store, CONFIG, at_minute(BASELINE + 2))
    assert _row(store).status == "baseline"
    send(store, rng, range(21, 31), received_minute=BASELINE + 5)  # late, but the baseline is not fitted yet
    send(store, rng, range(BASELINE + 1, BASELINE + 11), received_minute=BASELINE + 6)
    tick(store, CONFIG, at_minute(BASELINE + 8))
    row = _row(store)
    assert row.status == "watching" and row.blocks == BASELINE + 10  # every window one block, none lumped
    assert late_windows(store.connection, SERIES) == 0
