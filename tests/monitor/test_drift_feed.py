"""The drift watch's feed rule, pure (`drift_feed.split_late`): windows above the watermark in seq order, those
at or below it late (not fed), except while the row baselines (they join the fit)."""

from __future__ import annotations

from edgefleet.kernel.contracts import distributions as d
from edgefleet.monitor.drift_feed import Feed, Window, split_late

DIST = d.build(score={10: 100})


def windows(*seqs: int) -> list[Window]:
    return [Window(seq, 1000.0 - seq, DIST) for seq in seqs]  # received in the reverse order of their seqs


def test_windows_are_fed_in_seq_order_whatever_order_they_arrived_in() -> None:
    fresh, late, feed = split_late(Feed(), windows(5, 3, 4), baselining=False)
    assert [w.seq for w in fresh] == [3, 4, 5] and late == [] and feed == Feed(5, 0)


def test_windows_at_or_below_the_watermark_are_late_and_the_watermark_never_goes_back() -> None:
    fresh, late, feed = split_late(Feed(watermark=10, late=2), windows(9, 10, 12, 11), baselining=False)
    assert [w.seq for w in fresh] == [11, 12] and [w.seq for w in late] == [9, 10] and feed == Feed(12, 4)
    fresh, late, feed = split_late(feed, windows(3), baselining=False)
    assert fresh == [] and feed == Feed(12, 5)


def test_while_baselining_an_older_window_is_not_late() -> None:
    fresh, late, feed = split_late(Feed(watermark=10), windows(9, 11), baselining=True)
    assert [w.seq for w in fresh] == [11] and late == [] and feed == Feed(11, 0)
