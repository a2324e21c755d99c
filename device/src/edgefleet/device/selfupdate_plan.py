"""The agent updater's decisions (issue 23, item 4), pure: what to do with the agent channel's pointer, and
whether a switched-to agent came up healthy. The I/O around them is `edgefleet.device.selfupdate`.

The updater's state (`<install_dir>/selfupdate.json`, root's) keeps:
- `channel`: the channel record of the agent pointer (counter and version floor: `edgefleet.device.trust.pointers`), so
  a replayed old pointer or an unsigned downgrade is refused exactly as for models;
- `pending`: a switch awaiting its health verdict (written BEFORE the `current` symlink moves, so an updater
  killed mid-way resumes the verdict and rolls back if needed);
- `refused`: "<version> <manifest sha256>" of agent releases that did not come up healthy: never retried (a
  new release, or the same version re-published, is a new identity);
- `timed_out`: one entry per attempt whose wait merely ran out (the agent never said `failed`): rolled back and
  retried at a later run, refused once `max_attempts` attempts ran out.

Time: whether the agent started after the switch, whether its status is fresh and when the wait ends are judged
on the boot's monotonic clock with the boot id (the agent stamps both in its status: `BootClock`), never on the
wall clock, which NTP steps (a Raspberry Pi has no RTC). A reboot during the wait restarts it. An agent whose
status has no boot clock (a release before it) is judged on its wall times as before.

Both models ignore fields they do not know: after a rollback the older agent's updater reads the state a newer
one wrote.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from edgefleet.device.trust.pointers import ChannelRecord, Judgement, version_identity
from edgefleet.kernel.contracts.manifest import ChannelPointer
from edgefleet.kernel.contracts.status import AgentStatus

STATE_FILE = "selfupdate.json"
VERSIONS_DIR = "versions"
CURRENT_LINK = "current"
LEGACY_VENV = "venv"
"""The venv deploy-agent (SSH) installs: what `current` points at before the first self-update."""
MAX_REFUSED = 32
MAX_TIMED_OUT = 64
"""Timed-out attempts remembered (the oldest forgotten first)."""
DEFAULT_MAX_ATTEMPTS = 3
"""Attempts whose wait ran out before a release is refused for good (UpdaterConfig.max_attempts)."""


@dataclass(frozen=True)
class Moment:
    """One reading of the device's clocks: the wall clock (what people read; stepped by NTP), the boot's
    monotonic clock (`time.monotonic()`, never stepped) and the boot id that clock belongs to."""

    wall: datetime
    monotonic_s: float
    boot_id: str


class Pending(BaseModel):
    """A switch that awaits its health verdict."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    version: str
    manifest_sha256: str
    target: str = Field(description="where `current` points now (relative to the install dir)")
    previous_target: str = Field(description="where it pointed before: the rollback")
    switched_at: datetime = Field(description="wall clock, for people (and agents whose status has no boot clock)")
    boot_id: str = Field(description="the boot the monotonic times below are of (the switch's, then the wait's)")
    switched_s: float = Field(description="the switch on that boot's monotonic clock (0: in an earlier boot)")
    deadline_s: float = Field(description="the wait's end on that boot's monotonic clock")
    waits: int = Field(default=1, ge=1, description="waits begun for this switch: a reboot restarts the wait")
    channel_after: ChannelRecord = Field(description="the channel record once this version is kept")
    ran_model: bool = Field(default=False, description="the agent before the switch ran a model version: the "
                            "new one is healthy only once it runs one too (an agent that comes up `running` "
                            "but cannot open any model would otherwise be kept)")


class UpdaterState(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    channel: ChannelRecord = ChannelRecord()
    running: str | None = Field(default=None, description="version identity of the agent `current` runs")
    pending: Pending | None = None
    refused: tuple[str, ...] = ()
    timed_out: tuple[str, ...] = Field(default=(), description="one identity per attempt whose wait ran out")


class Action(NamedTuple):
    kind: Literal["none", "install", "refuse"]
    reason: str


HealthVerdict = Literal["healthy", "waiting", "unhealthy", "timed-out"]
"""unhealthy: the new agent said `failed` (refused at once); timed-out: the wait ran out (retried, then refused)."""


def decide(judgement: Judgement, pointer: ChannelPointer, state: UpdaterState) -> Action:
    """What to do with a pointer the channel rules judged (`assess_pointer`). Pure."""
    if judgement.verdict != "accept":
        return Action("refuse" if judgement.verdict == "refuse" else "none", judgement.reason)
    identity = version_identity(pointer.version, pointer.manifest_sha256)
    if identity == state.running:
        return Action("none", f"agent {pointer.version} is the running agent")
    if identity in state.refused:
        return Action("none", f"agent {pointer.version} did not come up healthy here before: not retried "
                      "(publish a fixed version)")
    retry = f"; {count} earlier attempt(s) timed out" if (count := state.timed_out.count(identity)) else ""
    return Action("install", f"agent channel names {pointer.version} (running: {state.running or 'unknown'}{retry})")


def version_target(version: str) -> str:
    """Where a version's venv lives, relative to the install dir: `versions/<version>/venv`."""
    return f"{VERSIONS_DIR}/{version}/venv"


def health(status: AgentStatus | None, pending: Pending, now: Moment, *, fresh_within: timedelta) -> HealthVerdict:
    """Whether the agent started after the switch came up: `running`, started after the switch, its status
    written within `fresh_within`, and running a model version when the agent before it did. `unhealthy` when it
    says `failed`; `timed-out` once the wait's deadline passed without that. `pending` is the one `resumed` for
    `now`'s boot. Pure."""
    age_s = _new_agent_status_age(status, pending, now) if status is not None else None
    if status is not None and age_s is not None:
        runs_a_model = status.version is not None or not pending.ran_model
        if status.state == "running" and runs_a_model and age_s <= fresh_within.total_seconds():
            return "healthy"
        if status.state == "failed":
            return "unhealthy"
    timed_out = pending.boot_id == now.boot_id and now.monotonic_s >= pending.deadline_s
    return "timed-out" if timed_out else "waiting"


def _new_agent_status_age(status: AgentStatus, pending: Pending, now: Moment) -> float | None:
    """Seconds since `status` was written, when an agent started after the switch wrote it; None otherwise.

    On the boot clock when the status has one: another boot's status is a stale file; in the switch's boot the
    agent must have started after it; in a later boot every agent did. Without one (an agent release before the
    boot clock): its wall times, as before."""
    clock = status.boot
    if clock is None:
        if _aware(status.started_at) < _aware(pending.switched_at):
            return None
        return (now.wall - _aware(status.updated_at)).total_seconds()
    age = clock.age_s(now.boot_id, now.monotonic_s)
    if age is None or (pending.boot_id == now.boot_id and clock.started_s < pending.switched_s):
        return None
    return age


def resumed(pending: Pending, now: Moment, *, timeout_s: float, max_waits: int) -> Pending:
    """The pending switch as a run at `now` waits on it: unchanged in the boot it was written in; after a reboot
    the wait restarts (the switch preceded this boot: `switched_s` 0), on this boot's clock. After `max_waits`
    waits (a new agent that keeps rebooting the device), the wait ends at once (a healthy agent is still kept).
    Pure."""
    if pending.boot_id == now.boot_id:
        return pending
    wait_s = timeout_s if pending.waits < max_waits else 0.0
    return pending.model_copy(update={"boot_id": now.boot_id, "switched_s": 0.0, "waits": pending.waits + 1,
                                      "deadline_s": now.monotonic_s + wait_s})


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def after_health(state: UpdaterState, verdict: HealthVerdict, *,
                 max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> UpdaterState:
    """The state once a pending switch is judged: healthy (it runs; the channel record moves on; its timed-out
    attempts are forgotten), timed-out (rolled back; the attempt counted, and the release refused once
    `max_attempts` attempts timed out), unhealthy (rolled back; refused from then on). Pure."""
    pending = state.pending
    if pending is None or verdict == "waiting":
        return state
    identity = version_identity(pending.version, pending.manifest_sha256)
    others = tuple(item for item in state.timed_out if item != identity)
    if verdict == "healthy":
        return state.model_copy(update={"pending": None, "running": identity, "channel": pending.channel_after,
                                        "timed_out": others})
    if verdict == "timed-out" and state.timed_out.count(identity) + 1 < max_attempts:
        return state.model_copy(update={"pending": None,
                                        "timed_out": (*state.timed_out, identity)[-MAX_TIMED_OUT:]})
    refused = (*[item for item in state.refused if item != identity], identity)[-MAX_REFUSED:]
    return state.model_copy(update={"pending": None, "refused": refused, "timed_out": others})


def removable_versions(installed: list[str], keep: set[str]) -> list[str]:
    """Installed version directories no link points at (the running one and the rollback are kept). Pure."""
    return sorted(version for version in installed if version not in keep)
