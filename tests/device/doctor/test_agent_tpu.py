"""`doctor` and the agent that holds the Edge TPU (issue 22): status schema 3 records the agent's probe outcome;
readers take 3 and 2 alike. The doctor's decision is pure (a status and whether its pid lives)."""

from __future__ import annotations

import json
import os

import pytest

from edgefleet.device.doctor import check_libedgetpu
from edgefleet.device.doctor.agent_tpu import (
    AgentTpu,
    agent_holding_tpu,
    held_summary,
    process_alive,
    read_agent_tpu,
)
from edgefleet.kernel.contracts.status import STATUS_SCHEMA_VERSION, EdgeTpuRecord, parse_status, write_status

SCHEMA_2_ON_THE_TPU = {"schema": 2, "device_id": "cam-1", "pid": 7, "state": "running", "backend": "edgetpu",
                       "variant": "edgetpu", "started_at": "2026-01-01T00:00:00+00:00",
                       "updated_at": "2026-01-01T00:00:05+00:00"}
RECORD = {"ok": True, "cause": "ok", "detail": "edgetpu ran one invoke", "library": "libedgetpu.so.1",
          "runtime": "ai-edge-litert 2.3.0", "held": True}


def status(**changes):
    return parse_status(json.dumps({**SCHEMA_2_ON_THE_TPU, **changes}))


def test_schema_3_records_the_outcome_and_schema_2_reads_without_it(tmp_path):
    assert STATUS_SCHEMA_VERSION == 3
    current = status(schema=3, edgetpu=RECORD)
    assert current.edgetpu == EdgeTpuRecord(**RECORD)
    write_status(tmp_path / "status.json", current)
    assert parse_status((tmp_path / "status.json").read_text()) == current
    previous = status()
    assert previous is not None and previous.schema_ == 2 and previous.edgetpu is None


def test_the_agent_holds_the_tpu_only_alive_running_and_holding():
    held = agent_holding_tpu(status(schema=3, edgetpu=RECORD), alive=True)
    assert held is not None and held.pid == 7 and held.record.detail == "edgetpu ran one invoke"
    assert agent_holding_tpu(status(schema=3, edgetpu=RECORD), alive=False) is None  # a stale status
    assert agent_holding_tpu(status(schema=3, edgetpu=RECORD, state="stopped"), alive=True) is None
    assert agent_holding_tpu(status(schema=3, edgetpu={**RECORD, "held": False}), alive=True) is None
    assert agent_holding_tpu(None, alive=True) is None


def test_a_schema_2_agent_on_the_tpu_holds_it_by_its_backend():
    held = agent_holding_tpu(status(), alive=True)
    assert held is not None and held.record is None and held.schema == 2
    assert agent_holding_tpu(status(backend="cpu", variant="cpu"), alive=True) is None


def test_doctor_reports_the_held_outcome_without_probing(standin_library, coral_data, monkeypatch):
    monkeypatch.setenv("STANDIN_EDGETPU_FAULT", "segv")  # a probe would crash: doctor must not run one
    held = agent_holding_tpu(status(schema=3, edgetpu=RECORD), alive=True)
    check = check_libedgetpu(standin_library, coral_data / "mobilenet_v1_0.25_128_quant.tflite", device=None,
                             required=True, timeout_s=30, agent=held)
    assert check.status == "ok" and "held by the running agent (pid 7)" in check.detail
    assert "edgetpu ran one invoke with ai-edge-litert 2.3.0" in check.detail
    older = check_libedgetpu(standin_library, None, device=None, required=True, timeout_s=30,
                             agent=agent_holding_tpu(status(), alive=True))
    assert older.status == "ok" and "status schema 2 records no probe outcome" in older.detail


@pytest.mark.parametrize("text", [None, "", "{not json"])
def test_no_readable_status_means_no_agent_holds_it(tmp_path, text):
    if text is not None:
        (tmp_path / "status.json").write_text(text)
    assert read_agent_tpu(tmp_path / "status.json") is None


def test_process_liveness():
    assert process_alive(os.getpid())
    assert process_alive(1)  # another user's process (init) lives too


def test_an_unreadable_status_warns_and_names_the_agents_user():
    status_, detail, fix = held_summary(AgentTpu(pid=None, schema=None, record=None,
                                                 unreadable="/r/status.json: Permission denied"))
    assert status_ == "warn" and "/r/status.json: Permission denied" in detail and "sudo -u" in fix


def test_a_status_this_user_cannot_read_is_not_probed_past(standin_library, tmp_path, monkeypatch):
    monkeypatch.setenv("STANDIN_EDGETPU_FAULT", "segv")  # a probe would crash: doctor must not run one
    path = tmp_path / "status.json"
    write_status(path, status(schema=3, edgetpu=RECORD))
    path.chmod(0)
    if os.access(path, os.R_OK):  # root reads anything: the case cannot be made here
        pytest.skip("running as root: every file is readable")
    agent = read_agent_tpu(path)
    assert agent is not None and agent.unreadable is not None
    check = check_libedgetpu(standin_library, tmp_path / "model.tflite", device=None, required=True, timeout_s=30,
                             agent=agent)
    assert check.status == "warn" and "cannot be read by this user" in check.detail and "sudo -u" in check.fix


def test_the_record_says_whether_this_process_holds_the_tpu():
    from edgefleet.device.runtime.probe import ProbeOutcome
    from edgefleet.device.runtime.tpu_access import EdgeTpuAccess

    held = {"now": False}
    access = EdgeTpuAccess(lambda *_, **__: ProbeOutcome(ok=True, cause="ok", detail="ran", library="lib",
                                                         runtime="rt"), holds=lambda _: held["now"])
    assert access.record() is None  # nothing probed yet
    access.outcome("m.tflite", device=None, library="lib", timeout_s=1)
    assert access.record() == EdgeTpuRecord(ok=True, cause="ok", detail="ran", library="lib", runtime="rt")
    held["now"] = True
    assert access.record().held
