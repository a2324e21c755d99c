"""The spot check's outbox: bounded by samples and bytes, oldest dropped and counted, unfinished samples gone."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from edgefleet.device.spotcheck.outbox import Outbox
from edgefleet.kernel.contracts.spotcheck import frame_id

RUN = datetime(2026, 12, 7, 21, 0, tzinfo=timezone.utc)


def _frame(seq: int) -> str:
    return frame_id(RUN, seq)


def test_the_oldest_samples_are_dropped_and_counted_beyond_the_cap(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "out", max_samples=3, max_bytes=10**6)
    for seq in range(5):
        outbox.add(_frame(seq), b"jpeg" * 10, b"{}")
    assert outbox.oldest(10) == [_frame(2), _frame(3), _frame(4)]
    assert outbox.dropped == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        f"{_frame(s)}{suffix}" for s in (2, 3, 4) for suffix in (".jpg", ".json"))


def test_the_byte_cap_drops_the_oldest_and_a_sample_too_big_alone_is_dropped(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "out", max_samples=100, max_bytes=250)
    for seq in range(3):
        outbox.add(_frame(seq), b"x" * 100, b"{}")
    assert outbox.oldest(10) == [_frame(1), _frame(2)] and outbox.bytes <= 250
    outbox.add(_frame(9), b"x" * 300, b"{}")
    assert outbox.dropped == 2 and _frame(9) not in outbox.oldest(10)


def test_a_reopened_outbox_keeps_complete_samples_in_order_and_removes_unfinished_ones(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "out", max_samples=10, max_bytes=10**6)
    for seq in (3, 1, 2):
        outbox.add(_frame(seq), b"jpeg", b"{}")
    (tmp_path / "out" / f"{_frame(7)}.jpg").write_bytes(b"half")  # a power cut before its JSON
    (tmp_path / "out" / "notes.json").write_text("{}")  # a name that is no frame id is never read
    reopened = Outbox(tmp_path / "out", max_samples=10, max_bytes=10**6)
    assert reopened.oldest(10) == [_frame(1), _frame(2), _frame(3)]
    assert not (tmp_path / "out" / f"{_frame(7)}.jpg").exists()
    assert reopened.read(_frame(2)) == (b"jpeg", b"{}")
    reopened.remove(_frame(2))
    assert reopened.oldest(10) == [_frame(1), _frame(3)] and len(reopened) == 2


def test_a_frame_id_added_again_replaces_its_sample_and_the_bytes_stay_counted_once(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "out", max_samples=10, max_bytes=10**6)
    outbox.add(_frame(1), b"x" * 100, b"{}")
    outbox.add(_frame(1), b"y" * 50, b"{}")
    assert len(outbox) == 1 and outbox.bytes == 52 and outbox.read(_frame(1))[0] == b"y" * 50
