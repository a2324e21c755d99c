"""`make demo` end to end: the main job runs on embedded defaults and stops everything it started."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from edgefleet.flows.release.native_logs import native_line
from edgefleet.kernel.contracts.layout import channel_key

WIDE = 300


def _processes_mentioning(text: str) -> list[str]:
    listing = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    return [line for line in listing.splitlines() if text in line and "pytest" not in line]


# The whole demo in a subprocess: ~4 minutes on the quiet 2-core machine, 11 with seven other sessions' tests
# beside it; the suite's 600 s hang guard is too short under such load, so this test has 1,800 s and its
# subprocess 1,500 s (which fails first, with the demo's output).
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_demo_rolls_out_two_good_releases_stops_the_bad_one_and_leaves_nothing_running(tmp_path):
    workdir = tmp_path / "demo"
    summary_file = tmp_path / "summary.json"
    result = subprocess.run([sys.executable, "-m", "edgefleet.demo", "--workdir", str(workdir),
                             "--summary-json", str(summary_file)],
                            capture_output=True, text=True, timeout=1500,
                            env={**os.environ, "COLUMNS": str(WIDE)})  # the panel's paths on one line each
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-4000:]
    assert "edgefleet demo: done" in result.stdout
    # First-run output (issue 22): no TensorFlow/absl native log lines between the steps (they went to the
    # workdir's tensorflow.log), and the closing panel names the --workdir the files are in.
    output = result.stdout + result.stderr
    assert [line for line in output.splitlines() if native_line(line.encode())] == [], output[-6000:]
    assert (workdir / "tensorflow.log").is_file()
    assert f"the demo's files stay in {workdir} until the next run" in result.stdout
    assert ".edgefleet/demo" not in result.stdout
    summary = json.loads(summary_file.read_text())
    assert summary["ok"] is True
    assert [(r["version"], r["published"]) for r in summary["releases"]] == [
        ("1.0.0", True), ("1.1.0", True), ("1.2.0", True)]
    outcomes = {r["version"]: r for r in summary["rollouts"]}
    assert outcomes["1.0.0"]["outcome"] == outcomes["1.1.0"]["outcome"] == "completed"
    bad = outcomes["1.2.0"]
    # Stopped at its shadow wave on the canary (issue 25): by the shadow metrics, before any device acted on it
    # (nothing to roll back).
    assert bad["outcome"] == "halted" and bad["devices_rolled_back"] == []
    assert bad["halted_by"] and all(name.startswith("shadow") for name in bad["halted_by"]), bad
    assert summary["devices"] == {f"sim-{i}": "shapes:1.1.0" for i in (1, 2, 3)}
    assert "halted in wave 1 by shadow" in result.stdout and "shadow wave:" in result.stdout  # the demo says so
    registry = workdir / "registry"
    records = {p.stem: json.loads(p.read_text()) for p in (registry / "rollouts").glob("*.json")}
    assert {name: record["state"] for name, record in records.items()} == {
        "shapes-1.0.0": "completed", "shapes-1.1.0": "completed", "shapes-1.2.0": "halted"}
    assert records["shapes-1.2.0"]["halted"]["wave"] == 1
    assert json.loads((registry / channel_key("shapes", "canary")).read_text())["version"] == "1.1.0"
    statuses = [json.loads(p.read_text()) for p in (workdir / "fleet").glob("sim-*/agent-root/status.json")]
    assert [(s["version"], s["state"]) for s in statuses] == [("1.1.0", "stopped")] * 3  # all back on 1.1.0
    # The monitor ran strict (issue 20): signatures checked against the devices' keys in the demo's registry,
    # and every device's telemetry verified (nothing refused).
    from edgefleet.monitor.config import load_monitor_config
    from edgefleet.monitor.store import open_store

    monitor = load_monitor_config(workdir / "monitor.yaml")
    assert (monitor.identity.mode, monitor.identity.registry) == ("strict", str(registry))
    with open_store(monitor.store_path, latency_window=1, count_bucket_s=1.0, create=False) as fleet:
        verified = {row[0] for row in fleet.connection.execute("SELECT device_id FROM verified_devices")}
        assert verified == {f"sim-{i}" for i in (1, 2, 3)}
        assert fleet.connection.execute("SELECT COUNT(*) FROM malformed").fetchone() == (0,)
        # The monitor holds the release public key (drift.public_key): each good release's calibration table was
        # taken from its manifest once the signature verified (issue 25 review).
        tables = {version: (state, correct is not None) for version, state, correct in fleet.connection.execute(
            "SELECT model_version, state, correct FROM calibrations")}
        assert {v: tables.get(v) for v in ("1.0.0", "1.1.0")} == {"1.0.0": ("verified", True),
                                                                   "1.1.0": ("verified", True)}, tables
    assert _processes_mentioning(str(workdir)) == []  # sshd, agents, emulator, Prefect server: all stopped
