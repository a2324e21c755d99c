"""The window stragglers of a pull rollout, pure: the devices still waiting for their maintenance window when the
last wave passed, watched and judged before the rollout is complete.

A wave is judged once its quorum reported (`pull_windows.wave_watched`); its devices still waiting for their window
take the version when it opens, and the next wave watches them (`pull_windows.left_waiting`). After the last wave
there is no next wave, so the flow (`pull_flow`) runs the *straggler watch*:

- who: every device the record left waiting for its window (`stragglers`: still pending, its last step `window`),
  of any wave. The record is the source, so a run resumed after a crash during the watch redoes no passed wave and
  watches them again;
- from when: the record's last note of them waiting (the last wave's judgement): each one's report is due once it
  had `report_timeout_s` inside its own window since then (`pull_windows.plan_wave`, the wait of the shadow wave:
  `latest_due`); refusals count from the earliest note;
- until: every one of them reported the version, refused it, or stayed silent past its deadline: no quorum
  shortcut (`StragglerWatch.quorum` is all of them). Only refusals over `failure_threshold` end it sooner, as they
  end a wave (no later report changes that);
- judged by a wave's rule (`decide_stragglers`: `pull_waves.decide_pull_wave` with `failure_threshold`, and the
  canary judge where a wave would have it: someone reported and the refusals are within the threshold; at 100 %
  nobody is left unmoved, so each device is compared with its own time on the old version, as in the last wave).
  Refusals over the threshold or a failed verdict halts the rollout (signed share 0, every moved device sent
  back), as a wave's halt does. Unlike a wave, stragglers that all stay silent do not halt it: a wave halts then
  because nothing says the version works, but here the whole fleet before them said so, and a camera that is off
  in its window says something of the camera, not of the version (one powered-off straggler must not send 10,000
  devices back); each silent one is recorded `no_report` and named in the log;
- at most `stragglers_max_wait_s` (`STRAGGLERS_MAX_WAIT_S`, 6 h) from the watch's start: the deployment runs one
  pull rollout at a time, so a watch for a night or weekly window would hold every other one. The cap is part of
  the watch's plan (`capped`: no report is due after it, so the watch ends there, judged on what it saw); the
  devices whose time in their window was not over then are *unwatched* (`unwatched`): they stay pending with a
  `window` step (`unwatched_steps`), as `watch_stragglers: false` leaves them all, and the rollout completes with a
  warning naming them (`unwatched_warning`): a re-run of the same rollout_id finds them (`stragglers`) and judges
  them, their deadlines counted from the same note (time in their window since then counts);
- the failure threshold is measured over the stragglers alone, not over the fleet: they are often a group of their
  own (another site, another window), so their refusals are evidence about the version there, and 3 refusals
  among 5 stragglers are not diluted by the 10,000 devices that took the version;
- the activations the canary judge compares come from the record, else the watch's first look that saw each one
  up (`pull_waves.seen_up`): a watch resumed or re-run after the stragglers took the version sees them up at its
  first poll, so their before/after windows start late (the judge compares later telemetry than it could). A cheap
  fix: take each one's activation from the monitor's first count bucket of (device, model, version)
  (`monitor.device_rows`: distributions summed per device, model, version and time bucket), the bucket's start
  being at most one `count_bucket_s` early; not built;
- the halt re-reads the channel (`halt_blocker`): at 100 % the staged-rollout guards treat this rollout as done,
  so a promotion or another rollout may have moved the channel during a long watch. Share 0 is signed only while
  the verified pointer still names this rollout; otherwise nothing is signed (it would send the fleet back from
  someone else's version), the verdict and the refusals are recorded, and the rollout ends halted, naming what the
  channel holds now and the devices that need attention;
- recorded: a step per device (`straggler_steps`), the verdict (its reason naming them), the halt or completion.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from edgefleet.flows.fleet.steps import StepRecord
from edgefleet.flows.rollout.pull_waves import PullDecision, WaveObservation, decide_pull_wave, over_threshold
from edgefleet.flows.rollout.pull_windows import (
    NO_REPORT_STEP,
    WINDOW_STEP,
    DeviceWindow,
    WavePlan,
    due_devices,
    left_waiting,
    openings,
)
from edgefleet.flows.rollout.record import DeviceRecord
from edgefleet.flows.rollout.verdict import Verdict
from edgefleet.kernel.contracts.manifest import ChannelPointer

STRAGGLER_STEP = "stragglers"
"""The record step of a device the straggler watch saw report (or refuse) the version, or still due at its end."""


@dataclass(frozen=True)
class StragglerWatch:
    """The devices still waiting for their maintenance window after the last wave, and since when."""

    devices: tuple[str, ...]
    after_wave: int
    """The last wave (its number): the one that passed before this watch."""
    since: datetime
    """The record's last note of them waiting (their latest `window` step): report deadlines count from here."""
    refusals_since: datetime
    """The earliest such note: a refusal since then is theirs."""

    @property
    def quorum(self) -> int:
        """The reports that end the watch early: all of them (no quorum shortcut, there is no next wave)."""
        return len(self.devices)

    @property
    def label(self) -> str:
        return f"window stragglers after wave {self.after_wave}"


def stragglers(devices: Mapping[str, DeviceRecord], after_wave: int) -> StragglerWatch | None:
    """The devices of waves up to `after_wave` (the last one, passed) still waiting for their maintenance window
    (`pull_windows.left_waiting`: pending, their last step `window`), None when there are none."""
    waiting = left_waiting(devices.values(), after_wave + 1)
    if not waiting:
        return None
    noted = [devices[device_id].steps[-1].started_at for device_id in waiting]
    return StragglerWatch(waiting, after_wave, since=max(noted), refusals_since=min(noted))


def decide_stragglers(watch: StragglerWatch, observation: WaveObservation, threshold: float,
                      verdict: Verdict | None) -> PullDecision:
    """A wave's decision (`decide_pull_wave`) on the stragglers' observation, a halt's reason naming them; but
    silence alone (nobody reported, nobody refused over the threshold) passes: see the module docstring."""
    if not observation.up and not over_threshold(observation, threshold):
        return PullDecision(False)
    decision = decide_pull_wave(observation, threshold, verdict)
    return replace(decision, reason=f"{watch.label}: {decision.reason}") if decision.halt else decision


def _step(watch: StragglerWatch, name: str, ok: bool, detail: str, until: datetime) -> StepRecord:
    """A straggler's record step: from the watch's start (`watch.since`) to `until`."""
    return StepRecord(name=name, ok=ok, started_at=watch.since,
                      seconds=max(0.0, (until - watch.since).total_seconds()), detail=detail)


def straggler_steps(watch: StragglerWatch, observation: WaveObservation, plan: WavePlan,
                    now: datetime) -> dict[str, StepRecord]:
    """device id -> the step the record adds for each straggler when the watch ended at `now`: reported (or refused)
    the version; silent after its time in its window (`no_report`, as a wave records it); not due yet, or still
    waiting for its window (only when refusals over the threshold ended the watch)."""
    opens = openings(plan, observation.window_waiting, now)
    where = f"in its maintenance window after wave {watch.after_wave}"

    def step(name: str, ok: bool, detail: str, until: datetime = now) -> StepRecord:
        return _step(watch, name, ok, detail, until)

    steps = {device: step(STRAGGLER_STEP, True, f"reported the version {where} (the straggler watch)",
                          observation.up_at.get(device, now)) for device in observation.up}
    steps |= {device: step(STRAGGLER_STEP, False, f"refused the version {where}") for device in observation.refused}
    for device in observation.waiting:
        steps[device] = (step(NO_REPORT_STEP, False, f"had its time {where} and did not report the version")
                         if now >= plan[device].due else
                         step(STRAGGLER_STEP, True, f"had not reported the version yet when the {watch.label} "
                                                    "were judged"))
    for device in observation.window_waiting:
        at = opens.get(device)
        steps[device] = step(WINDOW_STEP, True, f"still waiting for its maintenance window when the {watch.label} "
                                                "were judged" + (f" (opens {at.isoformat()})" if at else ""))
    return steps


def capped(plan: WavePlan, until: datetime) -> dict[str, DeviceWindow]:
    """`plan` with no report due after `until` (the watch's start + `stragglers_max_wait_s`): the watch
    (`pull_windows.wave_watched`) ends there at the latest, on what it saw."""
    return {device: replace(entry, due=min(entry.due, until)) for device, entry in plan.items()}


def unwatched(observation: WaveObservation, plan: WavePlan, now: datetime, until: datetime) -> tuple[str, ...]:
    """The stragglers the cap left unwatched: at or after `until`, those still pending (no report, no refusal)
    whose time in their window (`plan`, not capped) was not over at `now`. None before `until`."""
    if now < until:
        return ()
    return due_devices(plan, observation.waiting + observation.window_waiting, now)


def without(observation: WaveObservation, devices: tuple[str, ...]) -> WaveObservation:
    """`observation` of the watched stragglers only: `devices` (unwatched) are neither silent nor judged."""
    return replace(observation, waiting=tuple(d for d in observation.waiting if d not in devices),
                   window_waiting=tuple(d for d in observation.window_waiting if d not in devices))


def unwatched_steps(watch: StragglerWatch, devices: tuple[str, ...], plan: WavePlan,
                    now: datetime) -> dict[str, StepRecord]:
    """device id -> a `window` step for each straggler the cap left unwatched: still pending, found by a re-run
    (`stragglers`), its deadline counted from the same note (the step starts at `watch.since`)."""
    return {device: _step(watch, WINDOW_STEP, True, f"unwatched: the straggler watch after wave {watch.after_wave} "
                          "reached stragglers_max_wait_s before its time in its maintenance window was over (due "
                          f"{plan[device].due.isoformat()}); re-run the rollout to judge it", now)
            for device in devices}


def unwatched_warning(devices: tuple[str, ...], version: str, rollout_id: str, why: str) -> str:
    """The warning of a rollout that completes with stragglers nobody judged (`why`: the cap, or the watch off)."""
    return (f"{len(devices)} window straggler(s) not judged ({why}): {', '.join(devices)}; they take {version} "
            f"unwatched when their window opens; re-run the same rollout_id ({rollout_id}) to watch and judge them")


def halt_blocker(pointer: ChannelPointer | None, rollout_id: str, channel: str) -> str | None:
    """Why a straggler halt must not sign share 0 (`pointer`: the channel's verified pointer read just before, None
    when absent or not verified): it no longer names this rollout, so share 0 would send the fleet back from
    someone else's version (and stage_rollout refuses it). None: it still names this rollout; the halt signs."""
    if pointer is not None and pointer.rollout is not None and pointer.rollout.id == rollout_id:
        return None
    if pointer is None:
        return f"channel {channel} has no verified pointer now"
    stage = pointer.rollout
    held = (f"rollout {stage.id} of {pointer.version} at {stage.share_bp / 100:g} %" if stage is not None
            else f"{pointer.version}")
    by = f", updated by {pointer.updated_by}" if pointer.updated_by else ""
    return f"channel {channel} moved on during the straggler watch: it names {held}{by}"
