"""The calibration table decisions (`edgefleet.monitor.calibrations`, pure) and the rows they keep: when a version's
manifest is read again, what a refused, unchecked or verified row becomes, what is shown."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from edgefleet.kernel.contracts import distributions as d
from edgefleet.kernel.contracts.manifest import Calibration
from edgefleet.kernel.errors import ConfigError
from edgefleet.monitor.calibrations import (
    NO_TABLE,
    REFUSED,
    VERIFIED,
    Refusal,
    Row,
    VerifiedTable,
    decide,
    due,
    read_table_rows,
    record_missing,
    shown,
)
from edgefleet.monitor.config import MonitorConfig
from edgefleet.monitor.service import run_monitor
from edgefleet.monitor.store import open_store

TABLE = Calibration(images=(10,) * d.SCORE_BUCKETS, correct=(5,) * d.SCORE_BUCKETS)
SHA, OTHER_SHA = "a" * 64, "b" * 64
HOUR = 3600.0


def verified(at: float = 0.0) -> Row:
    return decide(None, "birds", "1.0.0", VerifiedTable(SHA, TABLE), at)


def test_refused_and_unchecked_rows_are_read_at_every_tick_and_verified_ones_every_recheck() -> None:
    assert due(None, 0.0, HOUR)
    assert due(decide(None, "birds", "1.0.0", Refusal("altered"), 0.0), 1.0, HOUR)
    assert due(Row("birds", "1.0.0", None, TABLE.images, TABLE.correct, "held-out"), 1.0, HOUR)  # before checks
    assert not due(verified(at=0.0), HOUR - 1, HOUR)
    assert due(verified(at=0.0), HOUR, HOUR)


def test_a_refused_or_unchecked_row_takes_the_verified_table_and_a_verified_one_keeps_its_own() -> None:
    refused = decide(None, "birds", "1.0.0", Refusal("signature check failed"), 0.0)
    assert (refused.state, refused.images, refused.note) == (REFUSED, None, "signature check failed")
    taken = decide(refused, "birds", "1.0.0", VerifiedTable(SHA, TABLE), 5.0)
    assert (taken.state, taken.correct, taken.manifest_sha256, taken.checked_at) == (VERIFIED, TABLE.correct, SHA, 5.0)
    unchecked = Row("birds", "1.0.0", None, (99,) * d.SCORE_BUCKETS, (99,) * d.SCORE_BUCKETS, "held-out")
    assert decide(unchecked, "birds", "1.0.0", VerifiedTable(SHA, None), 5.0).images is None
    assert decide(unchecked, "birds", "1.0.0", VerifiedTable(SHA, None), 5.0).note == NO_TABLE

    other = decide(taken, "birds", "1.0.0", VerifiedTable(OTHER_SHA, Calibration(
        images=TABLE.images, correct=TABLE.images)), 9.0)
    assert (other.correct, other.manifest_sha256) == (TABLE.correct, SHA)
    assert "different signed manifest" in other.conflict and "immutable" in other.conflict
    gone = decide(taken, "birds", "1.0.0", Refusal("signature check failed"), 9.0)
    assert gone.correct == TABLE.correct and "did not verify (signature check failed)" in gone.conflict
    assert decide(other, "birds", "1.0.0", VerifiedTable(SHA, TABLE), 10.0).conflict is None  # restored


def test_what_is_shown_a_refused_row_gives_no_estimate_and_a_conflict_is_shown_beside_it() -> None:
    refused = shown(decide(None, "birds", "1.0.0", Refusal("no key"), 0.0))
    assert refused.table is None and refused.note == "calibration table refused: no key"
    unchecked = shown(Row("birds", "1.0.0", None, TABLE.images, TABLE.correct, "held-out"))
    assert unchecked.table is None and "before the monitor checked manifest signatures" in unchecked.note
    assert shown(verified()).table is not None and shown(verified()).note is None
    conflicted = shown(decide(verified(), "birds", "1.0.0", VerifiedTable(OTHER_SHA, TABLE), 1.0))
    assert conflicted.table is not None and "different signed manifest" in conflicted.note


def test_a_row_kept_before_signatures_were_checked_is_read_again_after_the_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "fleet.sqlite"
    with open_store(path, latency_window=4, count_bucket_s=60.0) as store:  # the table as schema 4 first had it
        store.connection.execute("DROP TABLE calibrations")
        store.connection.execute("CREATE TABLE calibrations (model_name TEXT NOT NULL, model_version TEXT NOT NULL, "
                                 "images TEXT, correct TEXT, note TEXT NOT NULL, "
                                 "PRIMARY KEY (model_name, model_version))")
        store.connection.execute("INSERT INTO calibrations VALUES ('birds', '1.0.0', ?, ?, 'held-out')",
                                 (json.dumps([100] * d.SCORE_BUCKETS), json.dumps([100] * d.SCORE_BUCKETS)))
        store.connection.commit()
    with open_store(path, latency_window=4, count_bucket_s=60.0) as store:
        (row,) = read_table_rows(store.connection, ["birds"]).values()
        assert row.state is None and shown(row).table is None
        assert record_missing(store.connection, lambda m, v: VerifiedTable(SHA, TABLE), [("birds", "1.0.0")],
                              0.0, HOUR) == 1
        assert read_table_rows(store.connection, ["birds"])[("birds", "1.0.0")].correct == TABLE.correct


def test_a_release_key_path_that_holds_no_key_stops_the_monitor_naming_the_setting(tmp_path: Path) -> None:
    config = MonitorConfig(store_path=tmp_path / "fleet.sqlite", identity={"mode": "transition"},
                           drift={"registry": str(tmp_path / "registry"), "public_key": str(tmp_path / "release.pub")})
    with pytest.raises(ConfigError, match=r"drift\.public_key: .*release\.pub does not exist"):
        run_monitor(config, threading.Event())  # before it subscribes or opens the fleet state
    assert not (tmp_path / "fleet.sqlite").exists()


def test_a_refused_row_is_replaced_and_a_verified_one_kept_on_each_engine(store) -> None:
    from edgefleet.kernel.errors import VerificationError

    reads = [VerificationError("signature check failed", "re-publish"), VerifiedTable(SHA, TABLE),
             VerifiedTable(OTHER_SHA, None)]

    def source(model: str, version: str) -> VerifiedTable:
        outcome = reads.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    connection = store.connection
    for now in (0.0, 1.0, 1.0 + HOUR):
        store.engine.begin_write(connection)
        assert record_missing(connection, source, [("birds", "1.0.0")], now, HOUR) == 1
        connection.commit()
        row = read_table_rows(connection, ["birds"])[("birds", "1.0.0")]
        if now == 0.0:
            assert (row.state, row.note) == (REFUSED, "signature check failed (fix: re-publish)")
    assert (row.state, row.correct, row.manifest_sha256) == (VERIFIED, TABLE.correct, SHA)
    assert "different signed manifest" in row.conflict and reads == []
