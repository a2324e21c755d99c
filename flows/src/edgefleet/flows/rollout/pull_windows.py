"""A pull wave against the devices' maintenance windows, pure: whose window is open, when each device's report is
due, and when a wave has seen enough to be judged.

A device outside its maintenance window defers a pulled version and reports nothing (`edgefleet.device.pull`,
outcome `deferred`). The rollout knows each device group's window from its own parameters
(`PullRolloutParams.windows`: the `registry.window` the group's agents were given, the group named by the fleet
monitor's device tags, `edgefleet fleet tag`), and reads it with the device's own window code
(`edgefleet.device.window`: the same cron, zone and DST rules), so the device reports nothing new (no telemetry
revision). Then, per device of a wave:

- the report timeout counts only time inside its window: its report is due once it has had `report_timeout_s`
  of window since the wave began (`report_due`; a window shorter than the timeout carries over to the next one);
- until then, a device whose window is closed is *waiting for its window*, not silent; one that had its window
  and stayed silent past that is `no_report`, as without windows;
- the wave is judged once no device inside its window is still due and either nobody waits for a window or at
  least `quorum` devices reported the version (`first_wave_min`, the wave minimum: one device never decides;
  capped by the wave's size). The devices still waiting for their window take the version when it opens,
  unwatched by this wave (as hawkBit starts the next group at its success threshold) but watched by the next
  (`left_waiting`): their report or refusal is recorded and judged there. After the last wave the flow watches
  those still waiting itself, until each had its `report_timeout_s` inside its window, and judges them as a wave
  (`pull_stragglers`): the rollout is complete only then.
- a shadow wave hears from every device: it waits until each had its `timeout_s` inside its window
  (`latest_due`).

Without windows every device's report is due `report_timeout_s` after the wave began: the watch as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from edgefleet.device.window import MaintenanceWindow, next_window_start, window_start
from edgefleet.flows.rollout.pull_params import GroupWindow
from edgefleet.flows.rollout.pull_waves import WaveObservation, over_threshold
from edgefleet.flows.rollout.record import DeviceRecord


def window_of(groups: Sequence[GroupWindow], device_id: str, tags: Iterable[str]) -> MaintenanceWindow | None:
    """The maintenance window of `device_id`: its first group's (named among the group's `ids`, or carrying one
    of its `tags`; a group naming neither is every device), None when it is in no group (any time)."""
    carried = set(tags)
    for group in groups:
        if (not group.ids and not group.tags) or device_id in group.ids or carried.intersection(group.tags):
            return group.window
    return None


def opening(window: MaintenanceWindow | None, instant: datetime) -> datetime:
    """The first instant at or after `instant` inside the window (`instant` itself when it is open)."""
    if window is None or window_start(window, instant) is not None:
        return instant
    return next_window_start(window, instant)


def report_due(window: MaintenanceWindow | None, since: datetime, timeout: timedelta) -> datetime:
    """When a device has had `timeout` of its window since `since`: its report is due then (without a window,
    `since + timeout`). Window after window: each step ends at a window's end (or at the due time), so the loop
    ends after the windows the timeout spans."""
    if window is None:
        return since + timeout
    at, left = since, timeout
    while True:
        start = window_start(window, at)
        if start is None:  # closed: the time until it opens does not count
            at = next_window_start(window, at)
            continue
        end = start + window.duration
        if at + left <= end:
            return at + left
        left, at = left - (end - at), end


@dataclass(frozen=True)
class DeviceWindow:
    """One device of a wave: its maintenance window (None: any time) and when its report is due."""

    window: MaintenanceWindow | None
    due: datetime


WavePlan = Mapping[str, DeviceWindow]
"""device id -> its window and report deadline, for the devices of one wave (or of a halt's send-back)."""


def plan_wave(groups: Sequence[GroupWindow], devices: Sequence[str], tags: Mapping[str, Sequence[str]],
              since: datetime, timeout: timedelta) -> dict[str, DeviceWindow]:
    """Each device's window and report deadline, for a wave that began at `since`. The deadline is computed once
    per distinct window (a wave of 10,000 devices has as many windows as groups)."""
    windows = {device: window_of(groups, device, tags.get(device, ())) for device in devices}
    due = {_key(window): report_due(window, since, timeout) for window in _distinct(windows.values())}
    return {device: DeviceWindow(window, due[_key(window)]) for device, window in windows.items()}


_WindowKey = tuple[str, str, int] | None


def _key(window: MaintenanceWindow | None) -> _WindowKey:
    return None if window is None else (window.cron, window.timezone, window.duration_minutes)


def _distinct(windows: Iterable[MaintenanceWindow | None]) -> list[MaintenanceWindow | None]:
    """One of each window (a wave's devices have as many as there are groups)."""
    return list({_key(window): window for window in windows}.values())


def closed_now(plan: WavePlan, devices: Iterable[str], now: datetime) -> tuple[str, ...]:
    """Those of `devices` whose report is not due yet and whose window is closed at `now`: waiting for their
    window (to open, or to open again when the last one closed before they took the version)."""
    devices = tuple(devices)
    open_now = {_key(window): window is None or window_start(window, now) is not None
                for window in _distinct(plan[device].window for device in devices)}
    return tuple(device for device in devices
                 if now < plan[device].due and not open_now[_key(plan[device].window)])


def next_opening(plan: WavePlan, devices: Iterable[str], now: datetime) -> datetime | None:
    """When the first window of `devices` opens after `now` (None: none of them has a window)."""
    windows = _distinct(plan[device].window for device in devices)
    return min((opening(window, now) for window in windows if window is not None), default=None)


def openings(plan: WavePlan, devices: Iterable[str], now: datetime) -> dict[str, datetime]:
    """device id -> when its window opens next (`now` when it is open), for those of `devices` with a window;
    computed once per distinct window."""
    devices = [device for device in devices if plan[device].window is not None]
    opens = {_key(window): opening(window, now) for window in _distinct(plan[device].window for device in devices)}
    return {device: opens[_key(plan[device].window)] for device in devices}


def due_devices(plan: WavePlan, devices: Iterable[str], now: datetime) -> tuple[str, ...]:
    """Those of `devices` whose report is not due yet at `now` (they may still report)."""
    return tuple(device for device in devices if now < plan[device].due)


def quorum(first_wave_min: int, size: int) -> int:
    """Devices that must report the version before a wave with devices still waiting for their window is judged:
    the wave minimum (`first_wave_min`: one device never decides), at most the wave's size."""
    return min(first_wave_min, size)


def with_windows(observation: WaveObservation, plan: WavePlan, now: datetime) -> WaveObservation:
    """`observation` (`pull_waves.observe`) with the devices waiting for their window at `now` taken out of
    `waiting` into `window_waiting`."""
    pending = observation.waiting + observation.window_waiting
    closed = set(closed_now(plan, pending, now))
    return replace(observation, waiting=tuple(device for device in pending if device not in closed),
                   window_waiting=tuple(device for device in pending if device in closed))


def wave_watched(observation: WaveObservation, plan: WavePlan, now: datetime, *, quorum: int,
                 threshold: float | None) -> bool:
    """Whether the watch of a wave is over at `now` (`observation` sorted by `with_windows`): more devices refused
    the version than `threshold` allows (no later report changes that), or no device in its window may still
    report and either nobody waits for a window or `quorum` devices reported the version. A device whose report
    is due and did not come is silent (`no_report`): the watch does not wait for it any longer. `threshold` None:
    refusals do not end the watch (a halt's send-back)."""
    if threshold is not None and over_threshold(observation, threshold):
        return True
    if due_devices(plan, observation.waiting, now):
        return False
    return not observation.window_waiting or len(observation.up) >= quorum


WINDOW_STEP = "window"
"""The record step of a device left waiting for its maintenance window when its wave was judged."""
NO_REPORT_STEP = "no_report"
"""The record step of a device that had its window and did not report the version."""


def left_waiting(devices: Iterable[DeviceRecord], wave: int) -> tuple[str, ...]:
    """The devices of waves before `wave` left waiting for their maintenance window when theirs was judged (still
    pending, their last step `window`): a later wave watches them too, so what they do when their window opens
    (report the version, refuse it) is seen, recorded and judged. Devices that stayed silent in their window are
    not carried (each later wave would wait a report timeout for them)."""
    return tuple(device.device_id for device in devices
                 if device.wave < wave and device.state == "pending" and device.steps
                 and device.steps[-1].name == WINDOW_STEP)


def latest_due(plan: WavePlan, since: datetime) -> timedelta:
    """How long from `since` until every device of `plan` has had its time inside its window (the latest report
    due; no devices: none): the wait of a wave that must hear from all of them, e.g. the shadow wave."""
    return max((entry.due - since for entry in plan.values()), default=timedelta(0))
