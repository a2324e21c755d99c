"""What one `run_monitor` call did: its report, and the tally its one thread keeps while it runs.

Pure bookkeeping: `batch_counts` turns one committed batch's outcomes into counts, `Tally` adds them up.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace

from edgefleet.monitor.ingest import Outcome, Status
from edgefleet.monitor.telemetry_verifier import FORGED_PREFIX


@dataclass(frozen=True)
class MonitorReport:
    """What one `run_monitor` call did."""

    received: int
    applied: int
    late: int
    duplicates: int
    malformed: int
    lost: int  # net: gaps counted lost, minus late arrivals that filled them
    batches: int
    resubscribes: int
    metric_periods: int
    unauthenticated: int = 0  # refused: unsigned, badly signed, or from a device with no key (in `malformed`)

    def plus(self, **counts: int) -> MonitorReport:
        """This report with `counts` added (e.g. `plus(batches=1, received=3)`)."""
        return replace(self, **{name: getattr(self, name) + count for name, count in counts.items()})


def batch_counts(outcomes: Sequence[Outcome]) -> dict[str, int]:
    """What one committed batch adds to a `MonitorReport`."""
    counts = Counter(received=len(outcomes), batches=1, lost=sum(outcome.lost for outcome in outcomes))
    for outcome in outcomes:
        if outcome.status is Status.APPLIED:
            counts["applied"] += 1
        elif outcome.status is Status.LATE:
            counts["late"] += 1
        elif outcome.status is Status.DUPLICATE:
            counts["duplicates"] += 1
        else:
            counts["malformed"] += 1
            counts["unauthenticated"] += outcome.reason.startswith(FORGED_PREFIX)
    return dict(counts)


@dataclass
class Tally:
    """The running report of one `run_monitor` call (updated by its one thread)."""

    report: MonitorReport = field(default_factory=lambda: MonitorReport(*[0] * len(fields(MonitorReport))))

    def count(self, **counts: int) -> None:
        self.report = self.report.plus(**counts)
