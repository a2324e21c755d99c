"""Whether the running agent holds the Edge TPU, for `doctor` (issue 22).

The Edge TPU opens in one process at a time: `doctor`'s probe run beside an agent that holds it cannot open it
(PCIe: "Failed to load delegate"), and on USB can abort the agent. So while the agent holds the TPU, `doctor`
reports the probe outcome the agent recorded in its status (schema 3: `edgetpu`; a schema 2 agent on the TPU
records none, and its backend says that it holds it), and probes only when no agent does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from edgefleet.kernel.contracts.status import AgentStatus, EdgeTpuRecord, read_status
from edgefleet.kernel.errors import EdgefleetError
from edgefleet.kernel.findings import Status

LIVE_STATES = frozenset({"starting", "running"})


@dataclass(frozen=True)
class AgentTpu:
    """The running agent that holds the Edge TPU, and the outcome it recorded (None: a schema 2 agent); or,
    with `unreadable`, a status this user cannot read (then an agent may hold the TPU: no probe either)."""

    pid: int | None
    schema: int | None
    record: EdgeTpuRecord | None
    unreadable: str | None = None


def process_alive(pid: int) -> bool:
    """True when process `pid` exists (also when it belongs to another user, the agent's service user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def agent_holding_tpu(status: AgentStatus | None, alive: bool) -> AgentTpu | None:
    """The agent of `status` when it is alive and holds the Edge TPU (pure: `alive` is its pid's liveness)."""
    if status is None or not alive or status.state not in LIVE_STATES:
        return None
    record = status.edgetpu
    held = record.held if record is not None else (status.backend or "").startswith("edgetpu")
    return AgentTpu(pid=status.pid, schema=status.schema_, record=record) if held else None


def read_agent_tpu(status_path: Path) -> AgentTpu | None:
    """The agent holding the Edge TPU per its status file, if one does (no status file: none)."""
    try:
        status = read_status(status_path)
    except PermissionError as error:
        return AgentTpu(pid=None, schema=None, record=None, unreadable=f"{status_path}: {error.strerror}")
    except (EdgefleetError, OSError):
        return None
    return agent_holding_tpu(status, process_alive(status.pid))


def held_summary(agent: AgentTpu) -> tuple[Status, str, str | None]:
    """(status, detail, fix) of the libedgetpu check while `agent` holds the TPU: its recorded outcome."""
    if agent.unreadable is not None:
        return (Status.WARN, f"not probed: the agent's status ({agent.unreadable}) cannot be read by this user and the "
                        "agent may hold the Edge TPU (a probe would fight it for the TPU)",
                "run doctor as the agent's user (sudo -u <agent user> edgefleet-agent doctor), as a rollout does")
    where = f"held by the running agent (pid {agent.pid}); not probed, a probe would fight it for the TPU"
    record = agent.record
    if record is None:
        return (Status.OK, f"{where}; it runs on the Edge TPU (status schema {agent.schema} records no probe outcome)",
                None)
    outcome = record.detail if record.ok else f"edgetpu_unavailable ({record.cause}): {record.detail}"
    return Status.OK if record.ok else Status.FAIL, f"{where}; its probe: {outcome} with {record.runtime}", record.fix
