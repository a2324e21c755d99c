"""Finding 15: the monitor committed with `synchronous=NORMAL` but acked after commit, so a power cut could
lose what Pub/Sub had already been told was safe. The fleet state now commits with `synchronous=FULL`.
(A power cut cannot be staged in a test; the setting every commit relies on is checked on a real store.)

And the order itself (issue 22): a message is acked only once what it says is committed. Each stand-in
message looks, at the moment `ack()` is called, through a second SQLite connection (which sees committed
rows only) for its device's row: acking before the commit fails here."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from edgefleet.monitor.batch import process_batch
from edgefleet.monitor.ingest import Status
from edgefleet.monitor.store import open_store
from tests.security.test_one_message_stops_the_monitor import message

SQLITE_SYNCHRONOUS_FULL = 2
RECEIVED_AT = 1_800_000_000.0


def test_the_fleet_state_commits_durably_before_acking(tmp_path: Path) -> None:
    with open_store(tmp_path / "fleet.sqlite", latency_window=4, count_bucket_s=60.0) as store:
        (mode,) = store.connection.execute("PRAGMA synchronous").fetchone()
        assert mode == SQLITE_SYNCHRONOUS_FULL


@dataclass
class CommittedAtAck:
    """A Pub/Sub message stand-in that, when acked, records whether its device's row is committed (read
    from another connection to the same file)."""

    store_path: Path
    device_id: str
    seq: int
    committed_when_acked: list[bool] = field(default_factory=list)
    nacks: int = 0

    @property
    def data(self) -> bytes:
        return message(self.device_id, self.seq).to_json_bytes()

    @property
    def message_id(self) -> str:
        return f"{self.device_id}-{self.seq}"

    @property
    def attributes(self) -> dict[str, str]:
        return {}

    def ack(self) -> None:
        with sqlite3.connect(self.store_path) as other:
            row = other.execute("SELECT max_seq FROM devices WHERE device_id = ?", (self.device_id,)).fetchone()
        self.committed_when_acked.append(row is not None and row[0] >= self.seq)

    def nack(self) -> None:
        self.nacks += 1


class BreaksTheBatch(CommittedAtAck):
    """A message the store cannot take (a bug, say): the batch is retried one message at a time."""

    @property
    def data(self) -> bytes:
        raise RuntimeError("cannot be read")


def _store(path: Path):
    return open_store(path, latency_window=4, count_bucket_s=60.0)


def test_every_message_of_a_batch_is_committed_when_it_is_acked(tmp_path: Path) -> None:
    path = tmp_path / "fleet.sqlite"
    batch = [CommittedAtAck(path, f"cam-{index}", seq=1) for index in range(3)]
    with _store(path) as store:
        outcomes = process_batch(store, batch, RECEIVED_AT)

    assert [outcome.status for outcome in outcomes] == [Status.APPLIED] * 3
    assert [message.committed_when_acked for message in batch] == [[True]] * 3


def test_a_batch_retried_message_by_message_acks_each_after_its_commit(tmp_path: Path) -> None:
    path = tmp_path / "fleet.sqlite"
    good = [CommittedAtAck(path, "cam-1", seq=1), CommittedAtAck(path, "cam-2", seq=1)]
    bad = BreaksTheBatch(path, "cam-3", seq=1)
    with _store(path) as store:
        outcomes = process_batch(store, [good[0], bad, good[1]], RECEIVED_AT)

    assert [outcome.status for outcome in outcomes] == [Status.APPLIED, Status.MALFORMED, Status.APPLIED]
    assert [message.committed_when_acked for message in good] == [[True], [True]]
    assert bad.committed_when_acked == [] and bad.nacks == 1
