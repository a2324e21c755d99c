"""The canary judge over a real fleet state (SQLite): per-device windows from the monitor, controls over the
same windows; the same look decides a wave and a promotion."""

from __future__ import annotations

import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from edgefleet.flows.rollout.judgement import MonitorCollector, WaveSubject, look
from edgefleet.flows.rollout.params import CanaryGate
from edgefleet.kernel.contracts import distributions as d
from edgefleet.monitor.ingest import apply
from edgefleet.monitor.store import commit, open_store

sys.path.insert(0, str(Path(__file__).parents[2] / "monitor"))
from monitor_helpers import telemetry  # noqa: E402

ACTIVATED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
GATE = CanaryGate(min_samples=50)


def _summary(rng: np.random.Generator, n: int, score: float) -> d.Distributions:
    latency = [d.latency_bucket(v) for v in 5.0 * rng.lognormal(0, 0.2, n)]
    scores = [d.score_bucket(s) for s in np.clip(rng.normal(score, 0.05, n), 0, 0.999)]
    classes = rng.choice(5, size=n).tolist()
    count = lambda values: {int(k): values.count(k) for k in set(values)}  # noqa: E731
    return d.build(latency=count(latency), score=count(scores), classes=count(classes))


@pytest.fixture
def monitor_yaml(tmp_path: Path) -> Path:
    """A fleet state: c1 and k1..k4 on 1.0.0 for ten minutes, then c1 on 2.0.0 (collapsed scores)."""
    rng = np.random.default_rng(4)
    with open_store(tmp_path / "fleet.sqlite", latency_window=8, count_bucket_s=60.0) as store:
        for device in ("c1", "k1", "k2", "k3", "k4"):
            for minute in range(-10, 5):
                new = device == "c1" and minute >= 0
                message = telemetry(device, minute + 11, at=ACTIVATED + timedelta(minutes=minute, seconds=30),
                                    version="2.0.0" if new else "1.0.0", count=60)
                dist = _summary(rng, 60, 0.4 if new else 0.9)
                apply(store, message.model_copy(update={"inference": message.inference.model_copy(
                    update={"dist": dist})}))
        commit(store)
    path = tmp_path / "monitor.yaml"
    path.write_text(f"monitor:\n  store_path: {tmp_path / 'fleet.sqlite'}\n  latency_window: 8\n")
    return path


def test_the_monitor_look_judges_each_device_against_its_own_before_and_the_controls(monitor_yaml: Path) -> None:
    subject = WaveSubject(model="mobilenet", version="2.0.0", devices=("c1",), before="1.0.0",
                          activated_at=ACTIVATED, others=("k1", "k2", "k3", "k4"), reference=None, detector=False,
                          label_count=5)
    evidence = MonitorCollector(str(monitor_yaml))(subject, GATE)
    assert [w.device for w in evidence.canary] == ["c1"] and len(evidence.control) == 4
    assert evidence.canary[0].before.inferences == 600 and evidence.canary[0].after.inferences == 300
    assert evidence.control_kind == "concurrent"
    verdict = look(subject, GATE, MonitorCollector(str(monitor_yaml)), final=False)
    assert verdict.result == "fail" and "score_control" in verdict.halted_by
    assert verdict.control == "concurrent (4 control devices)"
    unchanged = replace(subject, version="1.0.0", devices=("k1",), others=("k2", "k3", "k4"))
    assert look(unchanged, GATE, MonitorCollector(str(monitor_yaml)), final=False).result == "pass"


def test_a_fleet_state_that_cannot_be_read_halts_the_wave(tmp_path: Path) -> None:
    path = tmp_path / "monitor.yaml"
    path.write_text(f"monitor:\n  store_path: {tmp_path / 'missing.sqlite'}\n")
    subject = WaveSubject(model="mobilenet", version="2.0.0", devices=("c1",), before="1.0.0",
                          activated_at=ACTIVATED, others=(), reference=None, detector=False)
    verdict = look(subject, GATE, MonitorCollector(str(path)), final=False)
    assert verdict.result == "fail" and verdict.halted_by == ("judge",)


def test_a_device_that_activated_after_the_wave_began_is_windowed_from_its_own_activation(monitor_yaml: Path) -> None:
    # a pull wave began 8 minutes before c1 took the version (its maintenance window opened then)
    began = ACTIVATED - timedelta(minutes=8)
    subject = WaveSubject(model="mobilenet", version="2.0.0", devices=("c1",), before="1.0.0", activated_at=began,
                          others=("k1", "k2", "k3", "k4"), reference=None, detector=False, label_count=5)
    from_the_wave = MonitorCollector(str(monitor_yaml))(subject, GATE).canary[0]
    assert from_the_wave.before.inferences == 120  # only the 2 minutes before the wave began: not its own before
    own = MonitorCollector(str(monitor_yaml))(replace(subject, activations={"c1": ACTIVATED}), GATE)
    assert own.canary[0].before.inferences == 600 and own.canary[0].after.inferences == 300
    assert own.control[0].before.inferences == 120  # the controls keep the wave's earliest activation
