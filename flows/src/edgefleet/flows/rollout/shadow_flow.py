"""The shadow wave in the SSH rollout (issue 25): before any device activates the new version, the first wave's
devices run it beside their current model and the pairs of answers are judged (`shadow.py`).

Per device (in parallel, one task each): preflight, upload (only what is missing), verify, then
`edgefleet-agent install STAGING` *without* --activate and `edgefleet-agent shadow MODEL VERSION` (the store's
shadow pointer; the channel pointer is not touched). Then the devices' shadow reports (`edgefleet-agent shadow
MODEL --json`) are read every `poll_interval_s` (a report counts once its agent was seen rewriting it, on the
rollout's own clock: `freshness.report_fresh`) until the verdict passes or fails, or `timeout_s` ends it (a
verdict still waiting then fails). Whatever the verdict, the shadow pointer is removed from every device again
(the installed version stays: the first wave activates it without a second upload when the verdict passed).
"""

from __future__ import annotations

import json
import logging
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from prefect import task
from prefect.cache_policies import NO_CACHE

from edgefleet.device.agent.shadow_stats import ShadowReport
from edgefleet.flows.fleet import agent as agent_ops
from edgefleet.flows.fleet.connection import DeviceConnection
from edgefleet.flows.fleet.inventory import DeviceSpec, Inventory
from edgefleet.flows.fleet.parallel import run_each
from edgefleet.flows.rollout import device as steps
from edgefleet.flows.rollout.freshness import ReportSeen, report_fresh, seen_again
from edgefleet.flows.rollout.params import CanaryGate, HealthGate
from edgefleet.flows.rollout.shadow import ShadowVerdict, judge_shadow_safely
from edgefleet.flows.rollout.shadow_params import ShadowWave
from edgefleet.flows.rollout.tasks import PreparedVersion
from edgefleet.kernel.contracts.telemetry import ShadowSummary
from edgefleet.kernel.errors import EdgefleetError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Staged:
    """Whether a device runs the candidate as its shadow, and why not."""

    device_id: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class StageJob:
    """One device of the shadow wave (`stage_candidate`): the version to install there without activating it."""

    inventory: Inventory
    device: DeviceSpec
    prepared: PreparedVersion
    gate: HealthGate
    disk_headroom: float


@task(name="shadow-stage", cache_policy=NO_CACHE, task_run_name="shadow-stage {job.device.id}")
def stage_candidate(job: StageJob) -> Staged:
    """Installs the version on the device without activating it and names it as the shadow candidate."""
    inventory, device, prepared, gate, disk_headroom = (job.inventory, job.device, job.prepared, job.gate,
                                                        job.disk_headroom)
    try:
        with DeviceConnection(device, inventory.known_hosts) as connection:
            checked = steps.preflight(connection, prepared.model, prepared.version, prepared.manifest_sha256,
                                      prepared.total_bytes, gate, disk_headroom,
                                      "edgetpu" in prepared.manifest.variants,
                                      signed_downgrade=prepared.signed_downgrade)
            if not checked.already_installed:
                uploaded = steps.upload_missing(connection, checked.probe.root, prepared.local_dir, prepared.manifest)
                agent_ops.verify_remote(connection, uploaded.staging)
                connection.agent("install", uploaded.staging, "--json")  # no --activate: nothing switches
                connection.run(f"rm -rf {shlex.quote(uploaded.staging)}", check=False)
            connection.agent("shadow", prepared.model, prepared.version, "--json")
    except EdgefleetError as error:
        return Staged(device.id, False, error.message)
    return Staged(device.id, True, f"shadowing {prepared.version} beside {checked.before}")


@dataclass
class ReportReader:
    """Reads each device's shadow report (`edgefleet-agent shadow MODEL --json`) look after look, keeping what
    each look saw: a report counts once its agent was seen rewriting it within `max_age_s` of the rollout's own
    clock (`freshness.report_fresh`), so neither a stopped agent's last pairs nor a device wall clock that is
    hours off (no RTC, NTP stepping it) decides."""

    inventory: Inventory
    model: str
    max_age_s: float
    clock: Callable[[], float] = time.monotonic
    seen: dict[str, ReportSeen] = field(default_factory=dict)

    def __call__(self, device_ids: Sequence[str]) -> dict[str, ShadowReport | None]:
        """Each device's report now; None for a device that has none yet, is unreachable, whose report cannot be
        read, or is not (or no longer) seen rewritten (`report_fresh`)."""
        return {device_id: self._read(device_id) for device_id in device_ids}

    def _read(self, device_id: str) -> ShadowReport | None:
        try:
            with DeviceConnection(self.inventory.device(device_id), self.inventory.known_hosts) as connection:
                raw = json.loads(connection.agent("shadow", self.model, "--json").stdout).get("report")
            if not raw:
                return None
            now = self.clock()
            seen = self.seen[device_id] = seen_again(self.seen.get(device_id), json.dumps(raw, sort_keys=True), now)
            if not report_fresh(seen, now, self.max_age_s):
                if seen.rewritten or now - seen.since_s > self.max_age_s:
                    log.warning("shadow wave: the shadow report of %s has not changed for %.0f s (its agent is not "
                                "writing it): not judged", device_id, now - seen.since_s)
                return None
            return ShadowReport.model_validate(raw)
        except (EdgefleetError, ValueError) as error:
            log.warning("shadow wave: cannot read the shadow report of %s: %s", device_id, error)
            return None


def pairs_of(reports: Mapping[str, ShadowReport | None], version: str) -> dict[str, ShadowSummary | None]:
    """Each device's pairs with `version` as the candidate (None: none yet, or another candidate). Pure."""
    return {device: report.summary if report is not None and report.candidate == version else None
            for device, report in reports.items()}


def not_running(reports: Mapping[str, ShadowReport | None], version: str) -> dict[str, str]:
    """Devices whose agent says `version` cannot run as their shadow (refused at load: verification, smoke
    test), with why. Pure."""
    return {device: report.error for device, report in reports.items()
            if report is not None and report.candidate == version and report.summary is None and report.error}


def clear_candidate(inventory: Inventory, model: str, device_id: str) -> None:
    """Removes the shadow pointer (best effort: a device left shadowing acts on nothing)."""
    try:
        with DeviceConnection(inventory.device(device_id), inventory.known_hosts) as connection:
            connection.agent("shadow", model, "--clear", "--json")
    except EdgefleetError as error:
        log.warning("shadow wave: could not clear the shadow on %s: %s", device_id, error.message)


class ShadowLook(NamedTuple):
    """One look at the shadow wave's devices: each one's pairs with the candidate (None: none yet), and the
    devices that cannot run it, with why. The SSH wave reads it from the agents' reports (`look_of`), the pull
    wave from the fleet monitor (`pull_shadow`)."""

    pairs: Mapping[str, ShadowSummary | None]
    not_running: Mapping[str, str]


def look_of(reports: Mapping[str, ShadowReport | None], version: str) -> ShadowLook:
    """The look the agents' own reports give. Pure."""
    return ShadowLook(pairs_of(reports, version), not_running(reports, version))


def await_shadow_verdict(collect: Callable[[], ShadowLook], gate: CanaryGate, wave: ShadowWave, *,
                         timeout_s: float | None = None, clock: Callable[[], float] = time.monotonic,
                         sleep: Callable[[float], None] = time.sleep) -> ShadowVerdict:
    """Looks until the verdict passes or fails; at `timeout_s` (default `wave.timeout_s`; a pull wave's devices
    with maintenance windows get it inside their windows: `pull_windows.latest_due`), a last look where waiting
    fails. A device that cannot run the candidate fails it at once. Judged with the one gate's thresholds
    (`shadow.py`)."""
    deadline = clock() + (wave.timeout_s if timeout_s is None else timeout_s)
    while True:
        final = clock() >= deadline
        look = collect()
        if look.not_running:
            return ShadowVerdict(result="fail", reason="the candidate does not run on " + "; ".join(
                f"{device}: {why}" for device, why in sorted(look.not_running.items())), metrics=(), frames={})
        verdict = judge_shadow_safely(look.pairs, gate, final=final)
        if verdict.result != "wait":
            return verdict
        sleep(wave.poll_interval_s)


def run_shadow_wave(inventory: Inventory, prepared: PreparedVersion, gate: CanaryGate, wave: ShadowWave,
                    health: HealthGate, disk_headroom: float, device_ids: Sequence[str], *,
                    max_parallel: int) -> tuple[ShadowVerdict, tuple[Staged, ...]]:
    """Stages the candidate on `device_ids` (`max_parallel` at once), judges their pairs, clears the shadow
    everywhere (see module doc)."""
    jobs = [StageJob(inventory, inventory.device(device_id), prepared, health, disk_headroom)
            for device_id in device_ids]
    staged = tuple(run_each(stage_candidate, jobs, max_workers=max_parallel))
    try:
        failed = [item for item in staged if not item.ok]
        if failed:
            reason = "; ".join(f"{item.device_id}: {item.detail}" for item in failed)
            return ShadowVerdict(result="fail", reason=f"the candidate could not be staged: {reason}", metrics=(),
                                 frames={}), staged
        read = ReportReader(inventory, prepared.model, wave.max_report_age_s)
        verdict = await_shadow_verdict(lambda: look_of(read(device_ids), prepared.version), gate, wave)
        return verdict, staged
    finally:
        for device_id in device_ids:
            clear_candidate(inventory, prepared.model, device_id)
