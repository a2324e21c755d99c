"""The SQLite spool: durable, seq across restarts, bounded oldest-first, clear errors."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from edgefleet.device.telemetry.spool import Spool
from edgefleet.kernel.contracts.telemetry import TelemetryMessage
from edgefleet.kernel.errors import TelemetryError

MessageFactory = Callable[..., Callable[[int], TelemetryMessage]]


def test_append_peek_ack_in_order(tmp_path: Path, build_message: MessageFactory) -> None:
    with Spool(tmp_path / "spool.sqlite", max_messages=100) as spool:
        seqs = [spool.append(build_message()) for _ in range(5)]
        assert seqs == [1, 2, 3, 4, 5]
        entries = spool.peek(3)
        assert [entry.seq for entry in entries] == [1, 2, 3]
        for entry in entries:
            message = TelemetryMessage.from_json_bytes(entry.data)
            assert message.seq == entry.seq
            assert entry.attributes == {"device_id": "dev-1", "model_version": "1.2.3", "epoch": str(spool.epoch)}
        assert spool.ack([2, 3]) == 2
        assert [entry.seq for entry in spool.peek(10)] == [1, 4, 5]
        assert spool.depth == 3
        assert spool.ack([2, 99]) == 0  # already gone or never there: ignored, not an error
        assert spool.depth == 3


def test_spool_survives_reopen_and_seq_continues(tmp_path: Path, build_message: MessageFactory) -> None:
    path = tmp_path / "spool.sqlite"
    with Spool(path, max_messages=100) as spool:
        assert spool.append_many([build_message()] * 4) == [1, 2, 3, 4]
        spool.ack([1, 2, 3, 4])
        spool.append(build_message())  # seq 5 stays unsent
        assert spool.depth == 1
    with Spool(path, max_messages=100) as reopened:
        assert reopened.depth == 1
        assert [entry.seq for entry in reopened.peek(10)] == [5]
        # Even though seqs 1..4 left the spool, the counter did not restart.
        assert reopened.append(build_message()) == 6
        assert reopened.last_seq == 6


def test_bound_drops_oldest_first_and_counts_persistently(
    tmp_path: Path, build_message: MessageFactory
) -> None:
    path = tmp_path / "spool.sqlite"
    with Spool(path, max_messages=5) as spool:
        for _ in range(8):
            spool.append(build_message())
        assert spool.depth == 5
        assert spool.dropped == 3
        assert [entry.seq for entry in spool.peek(10)] == [4, 5, 6, 7, 8]
        spool.append_many([build_message()] * 4)  # a batch larger than the free room
        assert [entry.seq for entry in spool.peek(10)] == [8, 9, 10, 11, 12]
        assert spool.dropped == 7
    with Spool(path, max_messages=5) as reopened:
        assert reopened.dropped == 7
        assert reopened.stats() == (5, 7, 12)


def test_byte_bound_drops_oldest_like_a_full_disk(tmp_path: Path, build_message: MessageFactory) -> None:
    """`max_bytes` is SQLite's max_page_count: the real SQLITE_FULL of a full disk. The spool makes room."""
    path = tmp_path / "spool.sqlite"
    with Spool(path, max_messages=1_000_000, max_bytes=64 * 1024) as spool:
        for _ in range(40):
            spool.append_many([build_message()] * 25)
        assert spool.last_seq == 1000
        assert spool.dropped > 0
        entries = spool.peek(2000)
        assert spool.depth == len(entries) == 1000 - spool.dropped
        # What survived is the newest, without gaps.
        assert [entry.seq for entry in entries] == list(range(1001 - len(entries), 1001))


def test_batch_bigger_than_the_disk_bound_is_a_clear_error_and_keeps_the_spool(
    tmp_path: Path, build_message: MessageFactory
) -> None:
    path = tmp_path / "spool.sqlite"
    with Spool(path, max_messages=1_000_000, max_bytes=32 * 1024) as spool:
        spool.append_many([build_message()] * 3)
        with pytest.raises(TelemetryError) as caught:
            spool.append_many([build_message()] * 2000)
        assert str(path) in caught.value.message
        assert "full" in caught.value.message
        assert "spool_max_mb" in caught.value.fix and "free disk space" in caught.value.fix
        # Nothing half-changed: the old messages are still there, no seq was used, and the spool works on.
        assert [entry.seq for entry in spool.peek(10)] == [1, 2, 3]
        assert spool.dropped == 0
        assert spool.append(build_message()) == 4


def test_unwritable_path_names_the_path_and_the_fix(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("not a directory")
    path = not_a_dir / "spool.sqlite"
    with pytest.raises(TelemetryError) as caught:
        Spool(path, max_messages=10)
    assert str(path) in caught.value.message
    assert "writable" in caught.value.fix


def test_corrupt_spool_file_is_quarantined_and_a_new_one_started(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    garbage = b"this is not an SQLite database, just bytes " * 100
    path.write_bytes(garbage)
    with Spool(path, max_messages=10) as spool:
        assert spool.quarantined is not None and spool.quarantined.read_bytes() == garbage
        assert spool.depth == 0 and spool.last_seq == 0 and spool.epoch > 0


def test_a_failing_build_stores_nothing_and_uses_no_seq(
    tmp_path: Path, build_message: MessageFactory
) -> None:
    def broken(seq: int) -> TelemetryMessage:
        raise RuntimeError("bad record")

    with Spool(tmp_path / "spool.sqlite", max_messages=10) as spool:
        spool.append(build_message())
        with pytest.raises(RuntimeError):
            spool.append_many([build_message(), broken])
        assert spool.depth == 1
        assert spool.append(build_message()) == 2


def test_build_must_use_the_given_seq(tmp_path: Path, build_message: MessageFactory) -> None:
    with Spool(tmp_path / "spool.sqlite", max_messages=10) as spool:
        with pytest.raises(ValueError, match="seq"):
            spool.append(lambda seq: build_message()(seq + 1))
        assert spool.depth == 0 and spool.last_seq == 0


def test_closed_spool_raises_telemetry_error(tmp_path: Path, build_message: MessageFactory) -> None:
    spool = Spool(tmp_path / "spool.sqlite", max_messages=10)
    spool.close()
    spool.close()  # twice is fine
    with pytest.raises(TelemetryError, match="closed"):
        spool.append(build_message())


def test_concurrent_appends_and_acks_keep_seqs_unique_and_depth_exact(
    tmp_path: Path, build_message: MessageFactory
) -> None:
    path = tmp_path / "spool.sqlite"
    appended: list[int] = []
    acked: list[int] = []
    with Spool(path, max_messages=100_000, synchronous="normal") as spool:
        done = threading.Event()

        def producer() -> None:
            for _ in range(100):
                appended.extend(spool.append_many([build_message()] * 5))
            done.set()

        def consumer() -> None:
            while not (done.is_set() and spool.depth == 0):
                entries = spool.peek(37)
                spool.ack(entry.seq for entry in entries)
                acked.extend(entry.seq for entry in entries)
                if not entries:
                    spool.wait_for_messages(0.05)

        threads = [threading.Thread(target=producer), threading.Thread(target=consumer)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sorted(appended) == list(range(1, 501))
        assert sorted(acked) == list(range(1, 501))
        assert spool.depth == 0
    # The in-memory depth agrees with the file.
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0
