"""The status and refusal contracts the agent writes and the rollout, the local fleet and the CLI read back."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from edgefleet.device.agent.stats import LoopStats
from edgefleet.device.store import ModelStore
from edgefleet.kernel.contracts import layout
from edgefleet.kernel.contracts.refusal import Refusal, dump_refusals, find_refusal, parse_refusals
from edgefleet.kernel.contracts.status import AgentStatus, LoopCounters, parse_status, read_status, write_status

SCHEMA_1_STATUS = {"schema": 1, "device_id": "cam-1", "pid": 7, "state": "running", "frames": 12,
                   "started_at": "2026-01-01T00:00:00+00:00", "updated_at": "2026-01-01T00:00:05+00:00"}


def test_a_status_of_an_older_agent_reads_with_new_fields_defaulted():
    status = parse_status(json.dumps(SCHEMA_1_STATUS))
    assert status is not None and status.schema_ == 1 and status.frames == 12
    assert (status.version_frames, status.dist, status.edgetpu_unavailable) == (0, None, None)
    assert (status.telemetry_state, status.telemetry_error) == (None, None)  # an agent before issue 22 said nothing


def test_a_status_of_a_newer_agent_reads_with_unknown_fields_ignored():
    status = parse_status(json.dumps({**SCHEMA_1_STATUS, "schema": 4, "thermal_c": 61.5}))
    assert status is not None and status.device_id == "cam-1" and not hasattr(status, "thermal_c")


@pytest.mark.parametrize("text", ["", "  \n", '{"device_id": "cam-1", "pi', '{"state": "running"}', "[]"])
def test_no_status_or_one_caught_mid_write_reads_as_not_known_yet(text):
    assert parse_status(text) is None


def test_the_status_written_is_the_status_read(tmp_path):
    status = AgentStatus.model_validate({**SCHEMA_1_STATUS, "schema": 2, "version": "1.0.0", "version_frames": 3})
    write_status(tmp_path / layout.STATUS_FILE, status)
    assert json.loads((tmp_path / layout.STATUS_FILE).read_text())["schema"] == 2  # the alias is what is written
    assert read_status(tmp_path / layout.STATUS_FILE) == status
    assert parse_status((tmp_path / layout.STATUS_FILE).read_bytes()) == status


def test_the_status_reports_the_loop_counters_of_the_running_version_only():
    stats = LoopStats(window=10)
    for i in range(4):
        stats.record(finished_at=i * 0.5, latency_ms=10.0 + i / 3, version="1.0.0")
    stats.record_error("1.0.0")
    snapshot = stats.snapshot()
    own = snapshot.status_counters("1.0.0")
    assert isinstance(own, LoopCounters) and not isinstance(own, type(snapshot))
    assert (own.frames, own.errors, own.version_frames, own.version_errors) == (4, 1, 4, 1)
    assert own.fps == 2.0 and own.latency_ms_p95 == 11.0 and own.dist is not None
    swapped = snapshot.status_counters("2.0.0")  # right after a swap the counts are still the old version's
    assert (swapped.frames, swapped.version_frames, swapped.version_errors, swapped.dist) == (4, 0, 0, None)
    status = AgentStatus(**dict(own), device_id="d", pid=1, state="running", started_at=datetime.now(timezone.utc),
                         updated_at=datetime.now(timezone.utc))
    assert status.version_frames == 4 and status.latency_ms_p50 == own.latency_ms_p50


def test_a_refusal_list_written_by_the_store_is_the_contract_and_keeps_its_format(tmp_path):
    store = ModelStore(tmp_path)
    store.mark_refused("birds", "2.0.0", "ab" * 32, "smoke test failed")
    store.mark_refused("birds", "2.1.0", "cd" * 32, "bad output")
    written = tmp_path / layout.device_refused_file("birds")
    entries = json.loads(written.read_text())
    assert [sorted(entry) for entry in entries] == [["manifest_sha256", "reason", "refused_at", "version"]] * 2
    assert entries[0]["refused_at"].endswith("+00:00")  # what Python 3.9's datetime.fromisoformat reads
    refusals = parse_refusals(written.read_bytes())
    assert [r.version for r in refusals] == ["2.0.0", "2.1.0"] and refusals[0].reason == "smoke test failed"
    assert store.refusals("birds") == list(refusals)


def test_refusals_read_tolerantly_and_match_by_version_and_manifest():
    text = json.dumps([{"version": "2.0.0", "manifest_sha256": "ab", "reason": "smoke test",
                        "refused_at": "2026-01-01T00:00:00+00:00", "exit_code": 3}])  # a newer writer's field
    refusals = parse_refusals(text)
    assert refusals == (Refusal(version="2.0.0", manifest_sha256="ab", reason="smoke test",
                                refused_at=datetime(2026, 1, 1, tzinfo=timezone.utc)),)
    assert find_refusal(refusals, "2.0.0") is refusals[0]
    assert find_refusal(refusals, "2.0.0", "ab") is refusals[0]
    assert find_refusal(refusals, "2.0.0", "cd") is None and find_refusal(refusals, "2.1.0") is None
    assert parse_refusals(dump_refusals(refusals)) == refusals
    assert parse_refusals("") == ()
    with pytest.raises(ValueError):
        parse_refusals('[{"version": "2.0.0"}]')


def test_on_device_paths_come_from_the_layout():
    assert layout.device_pointer("birds", layout.CURRENT_POINTER) == "models/birds/current"
    assert layout.device_version_dir("birds", "1.2.0") == "models/birds/1.2.0"
    assert layout.device_refused_file("birds") == "models/birds/.refused.json"
    assert layout.device_incoming_dir("birds", "1.2.0") == ".incoming/birds/1.2.0"
    with pytest.raises(ValueError):
        layout.device_pointer("birds", "../../etc")
    with pytest.raises(ValueError):
        layout.device_model_dir("../birds")


def test_the_status_command_reads_an_older_agents_status_and_lists_who_before_the_numbers(tmp_path):
    from typer.testing import CliRunner

    from edgefleet.device.cli import app

    (tmp_path / layout.STATUS_FILE).write_text(json.dumps({**SCHEMA_1_STATUS, "thermal_c": 61.5}))
    runner = CliRunner()
    shown = runner.invoke(app, ["status", "--root", str(tmp_path), "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["frames"] == 12 and "thermal_c" not in json.loads(shown.stdout)
    table = runner.invoke(app, ["status", "--root", str(tmp_path)], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and table.stdout.index("device_id") < table.stdout.index("frames")
    missing = runner.invoke(app, ["status", "--root", str(tmp_path / "nowhere")])
    assert missing.exit_code != 0 and "no agent status" in missing.output


def test_a_status_of_a_future_agent_with_states_this_reader_does_not_know_reads_them_as_unknown():
    """A later agent adds a telemetry state and an agent state: today's readers (the updater among them) must
    still read its status, or they take a healthy agent for one that never came up and roll it back."""
    future = {**SCHEMA_1_STATUS, "schema": 9, "telemetry_state": "throttled", "state": "running"}
    status = parse_status(json.dumps(future))
    assert status is not None and status.state == "running" and status.telemetry_state == "unknown"
    hibernating = parse_status(json.dumps({**future, "state": "hibernating"}))
    assert hibernating is not None and hibernating.state == "unknown"  # never taken for running
    assert parse_status(json.dumps({**future, "telemetry_state": "ok"})).telemetry_state == "ok"  # known kept
    assert parse_status(json.dumps({**future, "telemetry_state": None})).telemetry_state is None
