"""The agent updater's decisions (issue 23, item 4), pure: what to do with the agent channel's pointer, and
whether a switched-to agent came up healthy. The I/O around them is `edgefleet.device.selfupdate`.

The updater's state (`<install_dir>/selfupdate.json`, root's) keeps:
- `channel`: the channel record of the agent pointer (counter and version floor: `edgefleet.device.channel`), so
  a replayed old pointer or an unsigned downgrade is refused exactly as for models;
- `pending`: a switch awaiting its health verdict (written BEFORE the `current` symlink moves, so an updater
  killed mid-way resumes the verdict and rolls back if needed);
- `refused`: "<version> <manifest sha256>" of agent releases that did not come up healthy: never retried (a
  new release, or the same version re-published, is a new identity).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from edgefleet.device.channel import ChannelRecord, Judgement, version_identity
from edgefleet.kernel.contracts.manifest import ChannelPointer
from edgefleet.kernel.contracts.status import AgentStatus

STATE_FILE = "selfupdate.json"
VERSIONS_DIR = "versions"
CURRENT_LINK = "current"
LEGACY_VENV = "venv"
"""The venv deploy-agent (SSH) installs: what `current` points at before the first self-update."""
MAX_REFUSED = 32


class Pending(BaseModel):
    """A switch that awaits its health verdict."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str
    manifest_sha256: str
    target: str = Field(description="where `current` points now (relative to the install dir)")
    previous_target: str = Field(description="where it pointed before: the rollback")
    switched_at: datetime
    deadline: datetime
    channel_after: ChannelRecord = Field(description="the channel record once this version is kept")
    ran_model: bool = Field(default=False, description="the agent before the switch ran a model version: the "
                            "new one is healthy only once it runs one too (an agent that comes up `running` "
                            "but cannot open any model would otherwise be kept)")


class UpdaterState(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    channel: ChannelRecord = ChannelRecord()
    running: str | None = Field(default=None, description="version identity of the agent `current` runs")
    pending: Pending | None = None
    refused: tuple[str, ...] = ()


class Action(NamedTuple):
    kind: Literal["none", "install", "refuse"]
    reason: str


HealthVerdict = Literal["healthy", "waiting", "unhealthy"]


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
    return Action("install", f"agent channel names {pointer.version} (running: {state.running or 'unknown'})")


def version_target(version: str) -> str:
    """Where a version's venv lives, relative to the install dir: `versions/<version>/venv`."""
    return f"{VERSIONS_DIR}/{version}/venv"


def health(status: AgentStatus | None, pending: Pending, now: datetime, *, fresh_within: timedelta) -> HealthVerdict:
    """Whether the agent started after the switch came up: `running`, started after `switched_at`, its status
    written within `fresh_within`, and running a model version when the agent before it did. `unhealthy` once the
    deadline passed without that (or it says `failed`). Pure."""
    started_after = status is not None and _aware(status.started_at) >= pending.switched_at
    if started_after and status is not None:
        runs_a_model = status.version is not None or not pending.ran_model
        if status.state == "running" and runs_a_model and now - _aware(status.updated_at) <= fresh_within:
            return "healthy"
        if status.state == "failed":
            return "unhealthy"
    return "unhealthy" if now >= pending.deadline else "waiting"


def _aware(moment: datetime) -> datetime:
    from datetime import timezone

    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def after_health(state: UpdaterState, verdict: HealthVerdict) -> UpdaterState:
    """The state once a pending switch is judged healthy (it runs; the channel record moves on) or unhealthy
    (rolled back; the release is refused from then on). Pure."""
    pending = state.pending
    if pending is None or verdict == "waiting":
        return state
    identity = version_identity(pending.version, pending.manifest_sha256)
    if verdict == "healthy":
        return state.model_copy(update={"pending": None, "running": identity,
                                        "channel": pending.channel_after})
    refused = (*[item for item in state.refused if item != identity], identity)[-MAX_REFUSED:]
    return state.model_copy(update={"pending": None, "refused": refused})


def removable_versions(installed: list[str], keep: set[str]) -> list[str]:
    """Installed version directories no link points at (the running one and the rollback are kept). Pure."""
    return sorted(version for version in installed if version not in keep)
