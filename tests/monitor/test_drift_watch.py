"""The monitor's drift watch (issue 25): telemetry distributions in the store -> per-device baselines, CUSUMs,
the drift state and event, on both engines. Seeded data, times given (no clock, no timing)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from edgefleet.kernel.contracts import distributions as d
from edgefleet.monitor.config import DriftWatchConfig
from edgefleet.monitor.drift import DriftConfig
from edgefleet.monitor.drift_watch import accept, read_rows, tick
from edgefleet.monitor.ingest import apply
from edgefleet.monitor.query import device_status, fleet_status
from edgefleet.monitor.store import commit, to_epoch

from .monitor_helpers import T0, telemetry

# The threshold integrates the baseline's estimation error: 30 blocks would need h ~ 300, and batch means over
# 60 blocks (8 batches) know the spread to +-27% (h ~ 125); these blocks are independent, the AR(1) spread fits.
BASELINE = 60
CONFIG = DriftWatchConfig(settle_s=0.0, max_buckets_per_tick=10_000,
                          detector=DriftConfig(baseline_blocks=BASELINE, long_run_variance="ar1"))


def window(rng: np.random.Generator, score: float, frames: int = 100) -> d.Distributions:
    scores = np.clip(rng.normal(score, 0.08, frames), 0, 0.999)
    classes = rng.choice(4, size=frames, p=[0.4, 0.3, 0.2, 0.1])
    return d.build(latency={5: frames}, score=dict(zip(*np.unique((scores * d.SCORE_BUCKETS).astype(int),
                                                                   return_counts=True), strict=True)),
                   classes=dict(zip(*np.unique(classes, return_counts=True), strict=True)))


def feed(store, device_id: str, scores: list[float], rng: np.random.Generator, first_minute: int = 0) -> None:
    """One telemetry summary (100 frames) per minute: one count bucket each."""
    for offset, score in enumerate(scores):
        minute = first_minute + offset
        message = telemetry(device_id, minute + 1, at=T0 + timedelta(minutes=minute), count=100)
        apply(store, message.model_copy(update={"inference": message.inference.model_copy(
            update={"dist": window(rng, score)})}))
    commit(store)


def test_a_device_whose_scores_drop_is_in_drift_and_its_neighbour_is_not(store) -> None:
    rng = np.random.default_rng(7)
    quiet = list(0.8 + 0.02 * rng.standard_normal(BASELINE + 40))
    feed(store, "steady", quiet, rng)
    feed(store, "fogged", quiet[:BASELINE + 10] + [0.55] * 30, rng)

    # The first tick only baselines what has ended by then; the second reads the rest.
    first = tick(store, CONFIG, to_epoch(T0 + timedelta(minutes=BASELINE // 2)))
    assert first.devices == 2 and first.fitted == 0 and not first.drifts
    second = tick(store, CONFIG, to_epoch(T0 + timedelta(minutes=BASELINE + 41)))
    assert second.start == first.end and second.fitted == 2

    rows = read_rows(store.connection, ["steady", "fogged"])
    store.connection.commit()
    fogged = rows[("fogged", "mobilenet", "1.0.0")]
    assert rows[("steady", "mobilenet", "1.0.0")].status == "watching"
    assert fogged.status == "drift" and fogged.statistic == "score_median" and fogged.direction == "down"
    assert fogged.effect_sd < -2 and -0.35 < fogged.effect < -0.1  # the median fell by about 0.25
    [(device_id, drift)] = second.drifts
    assert device_id == "fogged" and drift.metric == "score_median"
    events = store.connection.execute("SELECT device_id, statistic, direction FROM drift_events").fetchall()
    store.connection.commit()
    assert events == [("fogged", "score_median", "down")]

    now = T0 + timedelta(minutes=BASELINE + 41)
    status = fleet_status(store, 10**9, now)
    by_id = {device.device_id: device for device in status.devices}
    assert by_id["fogged"].drift.status == "drift" and by_id["fogged"].drift.statistic == "score_median"
    assert by_id["steady"].drift.status == "watching"


def test_a_tick_claims_its_range_once_and_accepting_a_drift_starts_a_new_baseline(store) -> None:
    rng = np.random.default_rng(8)
    feed(store, "moved", [0.8] * (BASELINE + 2) + [0.4] * 20, rng)
    now = to_epoch(T0 + timedelta(minutes=BASELINE + 30))
    assert tick(store, CONFIG, now).drifts
    again = tick(store, CONFIG, now)  # nothing new has ended: another monitor's tick reads nothing twice
    assert again.start is None and again.devices == 0
    assert accept(store, "moved") == 1
    feed(store, "moved", [0.4] * 5, rng, first_minute=BASELINE + 30)
    tick(store, CONFIG, to_epoch(T0 + timedelta(minutes=BASELINE + 40)))
    assert device_status(store, "moved", 10**9, T0 + timedelta(minutes=BASELINE + 40)).drift.status == "baseline"


def test_the_estimated_accuracy_comes_from_the_manifests_calibration_table_beside_the_drift(store) -> None:
    from edgefleet.kernel.contracts.manifest import Calibration
    from edgefleet.monitor.calibrations import VerifiedTable

    # The held-out split: right 95% of the time at scores >= 0.75, 40% below.
    images = tuple(100 for _ in range(d.SCORE_BUCKETS))
    correct = tuple(95 if index >= 15 else 40 for index in range(d.SCORE_BUCKETS))
    asked = []

    def source(model: str, version: str) -> VerifiedTable:  # the registry's manifests, verified
        asked.append((model, version))
        return VerifiedTable("0" * 64, Calibration(images=images, correct=correct) if version == "1.0.0" else None)

    rng = np.random.default_rng(10)
    feed(store, "bright", [0.85] * (BASELINE + 32), rng)
    feed(store, "dim", [0.85] * (BASELINE + 2) + [0.45] * 30, rng)
    now = T0 + timedelta(minutes=BASELINE + 40)
    tick(store, CONFIG, to_epoch(now), source)
    tick(store, CONFIG, to_epoch(now + timedelta(minutes=5)), source)
    assert asked == [("mobilenet", "1.0.0")]  # read once per version
    by_id = {device.device_id: device.drift for device in fleet_status(store, 10**9, now).devices}
    assert by_id["bright"].accuracy.low < 0.95 * 0.93 < by_id["bright"].accuracy.accuracy
    assert by_id["dim"].status == "drift" and by_id["dim"].accuracy.accuracy < 0.6  # since the drift: the dim scene
    assert by_id["dim"].accuracy_text().startswith("est. accuracy 0.")


def test_the_fleet_page_lists_the_drifting_device_with_what_the_watch_cannot_see(store) -> None:
    from edgefleet.monitor.overview import fleet_overview
    from edgefleet.monitor.overview_render import to_html, to_markdown

    rng = np.random.default_rng(9)
    feed(store, "night", [0.8] * (BASELINE + 2) + [0.4] * 30, rng)  # h ~ 26: about 18 blocks of the drop
    feed(store, "day", [0.8] * (BASELINE + 32), rng)
    now = T0 + timedelta(minutes=BASELINE + 40)
    tick(store, CONFIG, to_epoch(now))
    overview = fleet_overview(store, fleet_status(store, 10**9, now), "mobilenet", now)
    assert overview.drift_watch == {"drift": 1, "watching": 1}
    [entry] = overview.drifting
    assert entry.device_id == "night" and entry.drift.statistic == "score_median"
    for page in (to_markdown(overview), to_html(overview)):
        assert "night" in page and "score_median down" in page and "does not say whether the answers are right" in page
        assert "cannot see confidently wrong answers" in page


def test_a_new_version_on_a_device_starts_its_own_baseline_and_the_old_drift_is_not_shown(store) -> None:
    rng = np.random.default_rng(11)
    feed(store, "cam", [0.8] * (BASELINE + 2) + [0.4] * 30, rng)
    tick(store, CONFIG, to_epoch(T0 + timedelta(minutes=BASELINE + 40)))
    start = BASELINE + 40
    for offset in range(5):  # the device swapped to 2.0.0
        message = telemetry("cam", start + offset + 1, at=T0 + timedelta(minutes=start + offset), count=100,
                            version="2.0.0")
        apply(store, message.model_copy(update={"inference": message.inference.model_copy(
            update={"dist": window(rng, 0.4)})}))
    commit(store)
    tick(store, CONFIG, to_epoch(T0 + timedelta(minutes=start + 10)))
    rows = read_rows(store.connection, ["cam"])
    store.connection.commit()
    assert rows[("cam", "mobilenet", "1.0.0")].status == "drift"
    assert rows[("cam", "mobilenet", "2.0.0")].status == "baseline" and rows[("cam", "mobilenet", "2.0.0")].blocks == 5
    shown = device_status(store, "cam", 10**9, T0 + timedelta(minutes=start + 10)).drift
    assert shown.status == "baseline" and shown.summary(BASELINE) == f"baseline 5/{BASELINE} blocks"


def test_the_daily_triage_lists_the_device_whose_day_moved_less_than_an_alarm(store) -> None:
    from edgefleet.monitor.drift_triage import daily_triage

    rng = np.random.default_rng(12)
    noise = list(0.8 + 0.03 * rng.standard_normal(BASELINE + 60))
    feed(store, "same", noise, rng)
    feed(store, "dimmer", noise[:BASELINE + 30] + [s - 0.03 for s in noise[BASELINE + 30:]], rng)
    now = T0 + timedelta(minutes=BASELINE + 60)
    tick(store, CONFIG, to_epoch(now))
    assert device_status(store, "dimmer", 10**9, now).drift.status == "watching"  # no alarm: the list shows it
    entries = daily_triage(store, CONFIG.detector, now, hours=0.5)
    assert [(e.device, e.metric, e.direction) for e in entries] == [("dimmer", "score_median", "down")]
    assert entries[0].qvalue <= CONFIG.detector.triage_fdr


def test_a_block_keeps_every_class_of_its_windows_past_32() -> None:
    """Telemetry 3 lists every class: a block merged from its windows must not cut them back to a per-block
    top 32 (a class would then move between its own cell and "other" from one block to the next)."""
    from edgefleet.kernel.contracts.distributions import build
    from edgefleet.monitor.drift.blocks import split_blocks

    windows = [build(score={10: 50}, classes={i: 1 for i in range(start, start + 50)}, top_k=1024)
               for start in (0, 50)]
    blocks, rest = split_blocks(windows, block_frames=100)
    assert rest is None and len(blocks) == 1
    assert len(blocks[0].classes) == 100 and blocks[0].class_other == 0
