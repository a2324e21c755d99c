"""Model health in production without labels (issue 25, item 1): the statistics, pure (no I/O).

- `device.fit_device / advance`: each device against its OWN baseline on the same version (its first
  `baseline_blocks` blocks after the activation), on statistics of blocks of frames (`blocks`: class-mix
  divergence, score median, detections per frame), with a CUSUM per statistic and direction on the blocks'
  normal scores, whose threshold is set for a false-alarm budget per device-day averaged over the baseline's
  own estimation error (`threshold`) and whose spread is the baseline's long-run spread (blocks are
  correlated) (`detector`). A `Drift` says which statistic moved, which way, by how much (in baseline SDs
  and natural units) and when.
- `triage.triage`: the daily list across devices (Benjamini-Hochberg), not the alarm.
- `accuracy`: expected accuracy from the calibrated confidence (CBPE) with an interval, and what it cannot see.
- `config.DriftConfig`: the settings, with named defaults.

Measured by `python -m bench.drift_bench` (simulated fleets) and `python -m bench.drift_scenes` (scene changes
on real photographs through the real model). The monitor runs it on a tick (`edgefleet.monitor.drift_watch`).
"""

from edgefleet.monitor.drift.accuracy import AccuracyEstimate, CalibrationTable, expected_accuracy, fit, fit_counts
from edgefleet.monitor.drift.config import DriftConfig, DriftError
from edgefleet.monitor.drift.device import DeviceBaseline, DeviceState, Drift, advance, fit_device, start
from edgefleet.monitor.drift.triage import TriageEntry, triage

__all__ = [
    "AccuracyEstimate", "CalibrationTable", "DeviceBaseline", "DeviceState", "Drift", "DriftConfig", "DriftError",
    "TriageEntry", "advance", "expected_accuracy", "fit", "fit_counts", "fit_device", "start", "triage",
]
