"""When the agent rewrites `status.json`: on every change a reader acts on, else every `interval_s`.

On a Raspberry Pi the agent root is on an SD card, where every rewrite is a flash write; the rollout only
needs the file fresher than its `status_max_age_s` (15 s by default) and every state change at once.
Pure: the agent's main thread feeds it statuses and the clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgefleet.kernel.contracts.status import AgentStatus

StatusKey = tuple[object, ...]


def status_key(status: AgentStatus) -> StatusKey:
    """The fields whose change is written at once: what the agent runs, its state, swaps and errors."""
    return (status.state, status.model, status.version, status.variant, status.backend, status.swaps,
            status.swap_failures, status.last_error, status.edgetpu_unavailable)


@dataclass
class StatusSchedule:
    """Decides whether a status is written now. Times are `time.monotonic()` seconds."""

    interval_s: float
    last_key: StatusKey | None = None
    last_write: float = float("-inf")

    def due(self, status: AgentStatus, now: float) -> bool:
        """True when `status` changed what a reader acts on, or the last write is `interval_s` old."""
        return status_key(status) != self.last_key or now - self.last_write >= self.interval_s

    def written(self, status: AgentStatus, now: float) -> None:
        self.last_key, self.last_write = status_key(status), now
