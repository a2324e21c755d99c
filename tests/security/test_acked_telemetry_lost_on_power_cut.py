"""Finding 15: the monitor committed with `synchronous=NORMAL` but acked after commit, so a power cut could
lose what Pub/Sub had already been told was safe. The fleet state now commits with `synchronous=FULL`.
(A power cut cannot be staged in a test; the setting every commit relies on is checked on a real store.)"""

from __future__ import annotations

from pathlib import Path

from edgefleet.monitor.store import open_store

SQLITE_SYNCHRONOUS_FULL = 2


def test_the_fleet_state_commits_durably_before_acking(tmp_path: Path) -> None:
    with open_store(tmp_path / "fleet.sqlite", latency_window=4, count_bucket_s=60.0) as store:
        (mode,) = store.connection.execute("PRAGMA synchronous").fetchone()
        assert mode == SQLITE_SYNCHRONOUS_FULL
