"""The rollout's one-command look at a device reads what the agent and its store write (no SSH: a local shell)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from datetime import UTC, datetime

from edgefleet.device.store import ModelStore
from edgefleet.flows.fleet.agent import PROBE_MARK, parse_probe, probe_script
from edgefleet.kernel.contracts import layout
from edgefleet.kernel.contracts.status import AgentStatus, read_boot_id, write_status


def _run_probe(root, model: str, version: str) -> str:
    return subprocess.run(["sh", "-c", probe_script(str(root), model, version)], capture_output=True, text=True,
                          check=True).stdout


def test_the_probe_reads_the_status_pointers_refusals_and_manifest_the_device_wrote(tmp_path):
    root = tmp_path / "agent root"  # a space: every path is quoted
    versions = root / layout.device_model_dir("birds")
    (versions / "1.0.0").mkdir(parents=True)
    (versions / "2.0.0").mkdir()
    (versions / "2.0.0" / layout.MANIFEST_FILE).write_bytes(b"{}")
    os.symlink("2.0.0", root / layout.device_pointer("birds", layout.CURRENT_POINTER))
    os.symlink("1.0.0", root / layout.device_pointer("birds", layout.PREVIOUS_POINTER))
    ModelStore(root).mark_refused("birds", "2.0.0", "ab" * 32, "smoke test failed")
    now = datetime.now(UTC)
    write_status(root / layout.STATUS_FILE, AgentStatus(device_id="cam-1", pid=3, state="running", started_at=now,
                                                        updated_at=now, version="2.0.0", frames=9))

    seen = parse_probe("login banner\n" + _run_probe(root, "birds", "2.0.0"))
    assert seen.root == str(root.resolve())
    assert (seen.current, seen.previous) == ("2.0.0", "1.0.0")
    assert seen.installed_manifest_sha256 == hashlib.sha256(b"{}").hexdigest()
    assert [(r.version, r.manifest_sha256, r.reason) for r in seen.refused] == [("2.0.0", "ab" * 32,
                                                                                   "smoke test failed")]
    assert seen.status is not None and seen.status.frames == 9 and seen.status.device_id == "cam-1"
    assert seen.free_bytes > 0 and seen.now_epoch >= int(now.timestamp())  # the device clock, read after


def test_the_probe_reads_the_boot_clock_and_boot_id_the_agent_stamps_its_status_with(tmp_path):
    before = time.monotonic()  # the agent's stamps (`AgentStatus.boot`) are this clock's readings
    seen = parse_probe(_run_probe(tmp_path / "root", "birds", "1.0.0"))
    assert seen.boot_id == read_boot_id()
    if seen.boot_id is not None:  # Linux: /proc/uptime counts from the same boot (plus any suspended time)
        assert seen.uptime_s is not None and seen.uptime_s >= before - 0.01  # /proc/uptime has 10 ms steps


def test_a_device_where_the_agent_never_ran_reads_as_empty(tmp_path):
    seen = parse_probe(_run_probe(tmp_path / "fresh", "birds", "1.0.0"))
    assert seen.status is None and seen.current is None and seen.previous is None
    assert seen.refused == () and seen.installed_manifest_sha256 is None


def test_an_unreadable_refusal_list_or_status_reads_as_none():
    output = f"{PROBE_MARK}\n/root\n1700000000.5\n1.0.0\n\n4096\n-\n[{{\"version\": \n{{\"device_id\": \n"
    seen = parse_probe(output)
    assert seen.refused == () and seen.status is None and seen.current == "1.0.0" and seen.free_bytes == 4096

from tests.flows.rollout.conftest import _emulator_env_restored  # noqa: E402,F401 - fixtures its old conftest gave it
