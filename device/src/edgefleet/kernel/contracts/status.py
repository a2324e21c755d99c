"""The status file the agent keeps fresh (`<root>/status.json`: on every state change, else every few
seconds), and reading it back. Under systemd the agent writes it in its runtime directory (a tmpfs) and
`<root>/status.json` is its link there (`edgefleet.device.agent.runtime_files`): readers read the root's.

`read_status` reads the file on the device (`edgefleet-agent status`); `parse_status` reads its text fetched
elsewhere (over SSH by the rollout and `deploy-agent`, from a simulated device by the local fleet).
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal, Union, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from edgefleet.kernel.contracts.distributions import Distributions
from edgefleet.kernel.errors import EdgefleetError

STATUS_SCHEMA_VERSION = 3  # 3: `edgetpu`, the Edge TPU probe outcome the agent acts on (issue 22); `boot`
BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
"""Linux's id of the current boot: a new random UUID at every boot."""
UNKNOWN = "unknown"
"""What a reader makes of a state a newer agent added: read, never a reason to drop the whole status."""

TelemetryState = Literal["ok", "sink_down", "failing", "off"]
"""ok: publishing (or nothing to publish); sink_down: the sink cannot open (no credentials...), retried with
backoff while the spool fills; failing: publishing fails (an outage), retried; off: telemetry could not start
this run (the spool); in every case inference goes on."""
AgentState = Literal["starting", "running", "stopping", "stopped", "failed"]


def _known_or_unknown(known: object) -> BeforeValidator:
    """A state outside `known` (a Literal) reads as `unknown`: the contract tolerates what a later agent adds."""
    values = frozenset(get_args(known))
    return BeforeValidator(lambda value: UNKNOWN if isinstance(value, str) and value not in values else value)


Unknown = Literal["unknown"]
ReadAgentState = Annotated[Union[AgentState, Unknown], _known_or_unknown(AgentState)]
ReadTelemetryState = Annotated[Union[TelemetryState, Unknown], _known_or_unknown(TelemetryState)]
"""What readers take: the writer's states, and `unknown` for one a newer agent added."""


class LoopCounters(BaseModel):
    """The inference loop's numbers as the status reports them (one type for the agent's `LoopStats` snapshot
    and the status: neither repeats the other field by field)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    frames: int = 0
    errors: int = 0
    fps: float = 0.0
    latency_ms_p50: float = 0.0
    latency_ms_p95: float = 0.0
    # --- schema 2: the running version since it started (what the canary judge reads without a monitor) ---
    version_frames: int = 0
    version_errors: int = 0
    dist: Distributions | None = None


class EdgeTpuRecord(BaseModel):
    """Status schema 3: the Edge TPU probe outcome the agent acts on, and whether it holds the TPU now.

    The TPU opens in one process at a time: while `held`, `edgefleet-agent doctor` reports this outcome instead
    of probing (its probe could not open the TPU, and on USB could abort the agent).
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    ok: bool
    cause: str = Field(description="ok | crash | hang | error")
    detail: str
    fix: str | None = None
    library: str
    runtime: str
    device: str | None = None
    held: bool = Field(default=False, description="the agent holds an Edge TPU delegate of `library` now")


class BootClock(BaseModel):
    """Status schema 3: when the agent started and wrote this status on the boot's monotonic clock
    (CLOCK_MONOTONIC, `time.monotonic()`: seconds since boot, never stepped by NTP), and which boot that is.

    A reader on the same device (the root updater) compares them with its own reading of the same clock: "started
    after the switch" and "written lately" hold whatever the wall clock did (a Raspberry Pi has no RTC: it boots
    at its last saved time and NTP steps it, by days, either way). Another boot's stamps compare with nothing.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    boot_id: str = Field(min_length=1, description="/proc/sys/kernel/random/boot_id when the agent started")
    started_s: float = Field(description="time.monotonic() when the agent started")
    updated_s: float = Field(description="time.monotonic() when this status was written")

    def age_s(self, boot_id: str, now_s: float) -> float | None:
        """Seconds since this stamp was written, read at `now_s` on the monotonic clock of boot `boot_id` (the
        agent's `time.monotonic()`, or the same boot's `/proc/uptime`); None when the stamp is of another boot."""
        if boot_id != self.boot_id:
            return None
        return max(0.0, now_s - self.updated_s)


def read_boot_id(path: Path = BOOT_ID_FILE) -> str | None:
    """This boot's id; None where there is none (not Linux): stamps are then left out, readers use wall times."""
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def boot_clock(boot_id: str | None, started_s: float, now_s: float) -> BootClock | None:
    """The stamp an agent started at `started_s` writes at `now_s` (monotonic seconds), None without a boot id."""
    return None if boot_id is None else BootClock(boot_id=boot_id, started_s=started_s, updated_s=now_s)


class AgentStatus(LoopCounters):
    """One snapshot of the running agent (status schema 3; 1 and 2 are still read): who it is, what it runs,
    its loop's counters (`LoopCounters`), swaps, telemetry and its Edge TPU.

    Readers (the rollout over SSH, the local fleet, `deploy-agent`, `edgefleet-agent status`, `doctor`) are
    tolerant: unknown fields are ignored and new ones default, so a reader is never broken by a newer agent and
    reads 1, 2 and 3 alike (a 2 has no `edgetpu`: None). A state a newer agent added (`state`,
    `telemetry_state`) reads as `unknown`: never taken for one this reader knows, never the status dropped.
    """

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    schema_: int = Field(default=STATUS_SCHEMA_VERSION, alias="schema", ge=1)

    device_id: str
    pid: int
    state: ReadAgentState
    started_at: datetime
    updated_at: datetime
    model: str | None = None
    version: str | None = None
    variant: str | None = None
    backend: str | None = None
    swaps: int = 0
    swap_failures: int = 0
    last_error: str | None = None
    spool_depth: int = 0
    spool_dropped: int = 0
    telemetry_published: int = 0
    results_overflow: int = 0
    # optional (older statuses lack it): why the Edge TPU is not used although one was wanted
    edgetpu_unavailable: str | None = Field(
        default=None, description="why the Edge TPU is not used though one was wanted (probe outcome), if so")
    # --- schema 3 ---
    edgetpu: EdgeTpuRecord | None = Field(
        default=None, description="the Edge TPU probe outcome the agent acts on (None: no TPU wanted or schema 2)")
    # telemetry's own state, so a device that cannot publish says so while it keeps inferring (None: before it)
    telemetry_state: ReadTelemetryState | None = Field(
        default=None, description="ok | sink_down (cannot open: no credentials...) | failing | off; None: not "
        "said; unknown: a state a newer agent added")
    telemetry_error: str | None = Field(
        default=None, description="why telemetry is not ok (message and fix), while it is not")
    boot: BootClock | None = Field(
        default=None, description="start and write on the boot's monotonic clock (None: not Linux, or older)")


def write_status(path: Path, status: AgentStatus) -> None:
    """Writes `status` atomically (temp file + rename), so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(status.model_dump_json(indent=2, by_alias=True))
    os.replace(temporary, path)


def read_status(path: Path) -> AgentStatus:
    """Reads the status file.

    Raises:
        EdgefleetError: when there is no status file (agent never ran there) or it is unreadable.
    """
    try:
        return AgentStatus.model_validate(json.loads(path.read_text()))
    except FileNotFoundError as error:
        gone = f" (it leads to {os.readlink(path)}, not there: a runtime directory is emptied at reboot)" \
            if path.is_symlink() else ""
        raise EdgefleetError(
            f"no agent status at {path}{gone}",
            "start the agent (`edgefleet-agent run --config agent.yaml`) or pass its --root") from error
    except (json.JSONDecodeError, ValidationError) as error:
        raise EdgefleetError(f"agent status {path} is unreadable: {error}",
                             "the agent rewrites it every few seconds (status.interval_s); if it persists, restart "
                             "the agent") from error


def parse_status(text: str | bytes) -> AgentStatus | None:
    """Reads status text fetched from a device; None when there is none (the agent never ran there) or it is
    unreadable (caught mid-write by a non-atomic writer, or not a status): treated as not known yet."""
    if not text.strip():
        return None
    try:
        return AgentStatus.model_validate_json(text)
    except ValueError:  # pydantic's ValidationError (bad JSON included) is a ValueError
        return None
