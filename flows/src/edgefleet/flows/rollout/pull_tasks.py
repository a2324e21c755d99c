"""Prefect tasks of the pull rollout: one per side effect (read the fleet, sign a share, watch a wave, judge it).

Pull-mode devices are never contacted: the rollout signs a share into the channel pointer
(`flows.registry.staged.stage_rollout`), the devices follow it at their next poll, and the fleet monitor's
state says what each one runs and whether it refused the version.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from prefect import task
from prefect.cache_policies import NO_CACHE

from edgefleet.flows.registry import RegistryWriter, stage_rollout
from edgefleet.flows.rollout.judgement import Judged, MonitorCollector, WaveSubject, await_verdict
from edgefleet.flows.rollout.params import CanaryGate
from edgefleet.flows.rollout.pull_waves import WaveObservation, observe, seen_up
from edgefleet.flows.rollout.pull_windows import WavePlan, next_opening, wave_watched, with_windows
from edgefleet.flows.trust.release_key import channel_signing_key
from edgefleet.flows.trust.signing_params import SigningParams
from edgefleet.kernel.contracts.manifest import ChannelPointer
from edgefleet.kernel.contracts.telemetry import ShadowSummary

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MonitorView:
    """What the rollout reads from the fleet monitor (its YAML; a connection per read)."""

    config_path: str
    model: str

    def versions(self, stale_after_s: float) -> dict[str, str | None]:
        """device id -> the version of `model` it reports, for the devices heard from within `stale_after_s`."""
        from edgefleet.monitor import fleet_status, load_monitor_config, open_fleet_store

        config = load_monitor_config(self.config_path)
        with open_fleet_store(config, create=False) as store:
            status = fleet_status(store, stale_after_s, datetime.now(UTC))
        return {device.device_id: device.model_version for device in status.devices
                if device.model_name == self.model and device.age_s <= stale_after_s}

    def failures(self, devices: Sequence[str], version: str, since: datetime) -> dict[str, int]:
        """device id -> swap failures and rollbacks of `version` it reported since `since`."""
        from edgefleet.monitor import load_monitor_config, open_fleet_store
        from edgefleet.monitor.health import device_failures

        config = load_monitor_config(self.config_path)
        with open_fleet_store(config, create=False) as store:
            return device_failures(store, devices, self.model, version, since)

    def tags(self, devices: Sequence[str]) -> dict[str, tuple[str, ...]]:
        """device id -> its tags (`edgefleet fleet tag`: the groups a rollout's maintenance windows name)."""
        from edgefleet.monitor import load_monitor_config, open_fleet_store
        from edgefleet.monitor.aggregates import device_tags
        from edgefleet.monitor.store import read_snapshot

        config = load_monitor_config(Path(self.config_path))
        with open_fleet_store(config, create=False) as store, read_snapshot(store) as connection:
            return device_tags(connection, list(devices))

    def shadow_pairs(self, devices: Sequence[str], version: str, primary: str | None,
                     since: datetime) -> dict[str, ShadowSummary | None]:
        """device id -> its pairs with candidate `version` beside `primary` since `since` (the stored shadow
        blocks of its telemetry, `monitor.shadows`); None: none yet."""
        from edgefleet.monitor import load_monitor_config, open_fleet_store
        from edgefleet.monitor.shadows import device_pairs

        config = load_monitor_config(self.config_path)
        with open_fleet_store(config, create=False) as store:
            found = device_pairs(store, devices, self.model, version, since, primary=primary)
        return {device: pairs.summary for device, pairs in found.items()}


@task(name="pull-fleet", cache_policy=NO_CACHE)
def fleet_task(monitor: MonitorView, stale_after_s: float) -> dict[str, str | None]:
    """The devices of the model the monitor heard from recently, with the version each runs."""
    return monitor.versions(stale_after_s)


@task(name="stage-share", cache_policy=NO_CACHE, task_run_name="stage-share {share_bp}bp")
def stage_share_task(registry: RegistryWriter, signing: SigningParams, *, model: str, channel: str,
                     rollout_id: str, version: str, share_bp: int, shadow_bp: int | None = None) -> ChannelPointer:
    """Signs the channel pointer at `share_bp` (and `shadow_bp`: a shadow wave); idempotent: the same shares
    again change nothing."""
    key = channel_signing_key(signing, registry.uri)
    return stage_rollout(registry, key, model=model, channel=channel, rollout_id=rollout_id, version=version,
                         share_bp=share_bp, by=f"rollout {rollout_id}", shadow_bp=shadow_bp,
                         validity=signing.validity)


@task(name="read-channel", cache_policy=NO_CACHE)
def channel_pointer_task(registry: RegistryWriter, signing: SigningParams, *, model: str,
                         channel: str) -> ChannelPointer | None:
    """The channel's pointer verified against the release key (as `stage_rollout` reads it); None when it is absent
    or does not verify."""
    key = channel_signing_key(signing, registry.uri)
    return registry.read_channel_checked(model, channel, key.public_key()).verified


def _utc_now() -> datetime:
    return datetime.now(UTC)


class WaveReads(Protocol):
    """What a wave's watch reads of the fleet (`MonitorView`'s reads)."""

    def versions(self, stale_after_s: float) -> Mapping[str, str | None]: ...

    def failures(self, devices: Sequence[str], version: str, since: datetime) -> Mapping[str, int]: ...


@dataclass(frozen=True)
class WatchRule:
    """When a wave's watch ends (`pull_windows.wave_watched`): each device's window and report deadline, the
    reports needed while devices wait for their window, and the wave's failure threshold."""

    plan: WavePlan
    quorum: int
    threshold: float | None
    """None: refusals do not end the watch (a halt's send-back)."""


def watch(label: str, monitor: WaveReads, devices: tuple[str, ...], version: str, since: datetime,
          max_failures: int, *, rule: WatchRule, poll_interval_s: float, stale_after_s: float,
          clock: Callable[[], datetime] = _utc_now) -> WaveObservation:
    """Watches until every one of `devices` reported `version`, refused it (since `since`), or stayed silent past
    its report deadline (counted inside its maintenance window), or enough reported and only devices waiting for
    their window are left (`rule`); returns the last observation (the devices still waiting stay pending). `label`
    names the watch in the log."""
    up_at: Mapping[str, datetime] = {}
    while True:
        now = clock()
        observation = seen_up(with_windows(observe(devices, monitor.versions(stale_after_s),
                                                   monitor.failures(devices, version, since), version, max_failures),
                                           rule.plan, now), up_at, now)
        up_at = observation.up_at
        if wave_watched(observation, rule.plan, now, quorum=rule.quorum, threshold=rule.threshold):
            return observation
        opens = next_opening(rule.plan, observation.window_waiting, now)
        log.info("%s: %d up, %d refused, %d waiting, %d waiting for their maintenance window%s", label,
                 len(observation.up), len(observation.refused), len(observation.waiting),
                 len(observation.window_waiting), f" (the next opens {opens.isoformat()})" if opens else "")
        time.sleep(poll_interval_s)


@task(name="watch-wave", cache_policy=NO_CACHE, task_run_name="watch-wave {wave}")
def watch_wave_task(wave: int, monitor: WaveReads, devices: tuple[str, ...], version: str, since: datetime,
                    max_failures: int, *, rule: WatchRule, poll_interval_s: float, stale_after_s: float,
                    clock: Callable[[], datetime] = _utc_now) -> WaveObservation:
    """Watches a wave's moved devices (`watch`): the wave ends at its quorum when the rest wait for their window."""
    return watch(f"wave {wave}", monitor, devices, version, since, max_failures, rule=rule,
                 poll_interval_s=poll_interval_s, stale_after_s=stale_after_s, clock=clock)


@task(name="watch-stragglers", cache_policy=NO_CACHE, task_run_name="watch-stragglers after wave {after_wave}")
def watch_stragglers_task(after_wave: int, monitor: WaveReads, devices: tuple[str, ...], version: str,
                          since: datetime, max_failures: int, *, rule: WatchRule, poll_interval_s: float,
                          stale_after_s: float, clock: Callable[[], datetime] = _utc_now) -> WaveObservation:
    """Watches the devices still waiting for their maintenance window after the last wave (`pull_stragglers`,
    `watch`; `rule`'s quorum is all of them): until each reported, refused or had its time in its window."""
    return watch(f"window stragglers after wave {after_wave}", monitor, devices, version, since, max_failures,
                 rule=rule, poll_interval_s=poll_interval_s, stale_after_s=stale_after_s, clock=clock)


@task(name="canary-judgement", cache_policy=NO_CACHE, task_run_name="canary-judgement wave {wave}")
def judge_pull_wave_task(wave: int, subject: WaveSubject, gate: CanaryGate, monitor_config: str,
                         poll_interval_s: float) -> Judged:
    """The canary verdict of a wave: the moved devices against those not moved yet, from the fleet state."""
    return await_verdict(subject, gate, MonitorCollector(monitor_config), "monitor", poll_interval_s=poll_interval_s)
