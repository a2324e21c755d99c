"""What one monitor run did: a committed batch's outcomes as counts, added up by the run's tally."""

from __future__ import annotations

from edgefleet.monitor.ingest import Outcome, Status
from edgefleet.monitor.run_report import Tally, batch_counts
from edgefleet.monitor.telemetry_verifier import FORGED_PREFIX


def test_a_batch_counts_each_outcome_once_and_its_net_losses() -> None:
    outcomes = [
        Outcome(Status.APPLIED, "d1", 5, lost=2),
        Outcome(Status.LATE, "d1", 4, lost=-1),
        Outcome(Status.DUPLICATE, "d1", 5),
        Outcome(Status.MALFORMED, reason="not JSON"),
        Outcome(Status.MALFORMED, reason=f"{FORGED_PREFIX}bad signature"),
    ]
    assert batch_counts(outcomes) == {"received": 5, "batches": 1, "lost": 1, "applied": 1, "late": 1,
                                      "duplicates": 1, "malformed": 2, "unauthenticated": 1}


def test_the_tally_adds_batches_up() -> None:
    tally = Tally()
    tally.count(**batch_counts([Outcome(Status.APPLIED, "d1", 1)]))
    tally.count(**batch_counts([Outcome(Status.APPLIED, "d2", 1), Outcome(Status.DUPLICATE, "d2", 1)]))
    tally.count(resubscribes=1)
    report = tally.report
    assert (report.received, report.applied, report.duplicates, report.batches, report.resubscribes) == (3, 2, 1, 2, 1)
    assert report.malformed == report.unauthenticated == report.metric_periods == 0
