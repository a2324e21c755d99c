"""Two monitor processes writing one fleet state at once (issue 23, item 2): every message applied once, no
lost update, on both engines. Each writer is a real process with its own connection (`race_writer.py`); both
get every message of the fleet (as two monitors do when Pub/Sub redelivers), in their own shuffled order."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from monitor_helpers import wait_until

from edgefleet.monitor.query import fleet_status, ingest_counters
from edgefleet.monitor.store import open_store

WRITERS = 2
DEVICES = 2
SEQS = 100
WRITER_TIMEOUT_S = 600  # generous: a loaded CI machine; the test asserts outcomes, never speed
RACE_WRITER = Path(__file__).parent / "race_writer.py"


def _race(store_url: str, tmp_path: Path) -> list[dict[str, int]]:
    go = tmp_path / "go"
    writers = [subprocess.Popen([sys.executable, str(RACE_WRITER), store_url, str(go), str(seed), str(DEVICES),
                                 str(SEQS)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for seed in range(WRITERS)]
    wait_until(lambda: all(Path(f"{go}.ready-{seed}").exists() for seed in range(WRITERS)) or any(
        writer.poll() is not None for writer in writers), "both writers ready", timeout_s=WRITER_TIMEOUT_S)
    go.touch()
    results = []
    for writer in writers:
        out, err = writer.communicate(timeout=WRITER_TIMEOUT_S)
        assert writer.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def test_two_writer_processes_apply_each_message_once_and_lose_no_update(store_url, tmp_path) -> None:
    open_store(store_url, latency_window=4, count_bucket_s=60.0).close()  # the schema exists before the race
    results = _race(store_url, tmp_path)
    total = DEVICES * SEQS
    applied = sum(result.get("applied", 0) + result.get("late", 0) for result in results)
    assert applied == total  # each (device, seq) applied by exactly one of the two writers
    assert sum(result.get("duplicate", 0) for result in results) == total * (WRITERS - 1)
    assert sum(result.get("ack", 0) for result in results) == total * WRITERS  # all acked, after commit
    assert not any(result.get("nack") or result.get("malformed") for result in results)
    with open_store(store_url, latency_window=4, count_bucket_s=60.0, create=False) as store:
        rows = store.connection.execute(
            "SELECT device_id, max_seq, messages, duplicates, lost, model_version FROM devices "
            "ORDER BY device_id").fetchall()
        assert [tuple(row) for row in rows] == [
            (f"race-{device}", SEQS, SEQS, SEQS * (WRITERS - 1), 0, "1.1.0") for device in range(DEVICES)]
        assert store.connection.execute("SELECT COUNT(*) FROM seq_gaps").fetchone()[0] == 0
        assert store.connection.execute("SELECT COUNT(*) FROM latency_samples").fetchone()[0] == total
        assert store.connection.execute("SELECT SUM(messages) FROM version_counts").fetchone()[0] == total
        counters = ingest_counters(store)  # the aggregates kept on ingest agree with the rows
        assert (counters.devices, counters.messages, counters.duplicates, counters.lost) == (
            DEVICES, total, total * (WRITERS - 1), 0)
        versions = fleet_status(store, 1e12, store_now()).versions
        assert [(v.model_version, v.devices) for v in versions] == [("1.1.0", DEVICES)]


def store_now():
    from datetime import UTC, datetime

    return datetime.now(UTC)
