"""Telemetry batched by time (issue 24) keeps the crash guarantee: what the writer spooled survives kill -9,
and what was delivered plus what waits in the spool is every seq from 1 to the last, without a gap."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgefleet.device.telemetry.spool import Spool
from edgefleet.kernel.contracts.telemetry import TelemetryMessage

RECORDS = 300
WAIT_S = 60.0
CHILD = """
import sys, threading
from edgefleet.device.telemetry.config import TelemetryConfig
from edgefleet.device.telemetry.service import TelemetryService
from edgefleet.kernel.contracts.telemetry import ModelRef
model = ModelRef(name="m", version="1.0.0", variant="cpu", backend="cpu")
config = TelemetryConfig(mode="every", flush_interval_s=0.2, append_batch_size=64)
service = TelemetryService(config, sys.argv[1], "dev-kill9").start()
for latency in range({records}):
    service.record_inference(model, float(latency))
print("recorded", flush=True)
threading.Event().wait()  # until killed
"""


def _last_seq(spool_path: Path) -> int:
    try:
        with sqlite3.connect(f"file:{spool_path}?mode=ro", uri=True, timeout=5) as connection:
            row = connection.execute("SELECT value FROM counters WHERE name = 'last_seq'").fetchone()
    except sqlite3.Error:
        return 0
    return row[0] if row else 0


def test_kill_9_after_the_writer_spooled_loses_nothing_and_leaves_no_gap(tmp_path: Path) -> None:
    spool_path = tmp_path / "spool.sqlite"
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(records=RECORDS), str(spool_path)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "recorded"
        deadline = time.monotonic() + WAIT_S
        while _last_seq(spool_path) < RECORDS + 1:  # `started` + every record, in the spool
            if time.monotonic() > deadline or child.poll() is not None:
                pytest.fail(f"the writer spooled {_last_seq(spool_path)} of {RECORDS + 1} messages")
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        assert child.wait(WAIT_S) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    sink = tmp_path / "telemetry.jsonl"
    lines = [line for line in (sink.read_bytes().splitlines() if sink.exists() else []) if line.strip()]
    delivered = {TelemetryMessage.from_json_bytes(line).seq for line in lines[:-1]}
    try:  # the kill may cut the last line short: that message was not acked, so it still waits in the spool
        delivered |= {TelemetryMessage.from_json_bytes(line).seq for line in lines[-1:]}
    except ValueError:
        pass
    with Spool(spool_path, max_messages=100_000) as spool:
        waiting = {entry.seq for entry in spool.peek(100_000)}
        last_seq = spool.last_seq
    assert last_seq >= RECORDS + 1
    assert delivered | waiting == set(range(1, last_seq + 1))  # duplicates allowed, gaps not
