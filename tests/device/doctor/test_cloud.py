"""`doctor`'s checks of what the agent reaches: a local registry's channel, a Pub/Sub endpoint's socket."""

from __future__ import annotations

import socket
from pathlib import Path

from edgefleet.device.agent.config import load_config
from edgefleet.device.doctor.cloud import check_pubsub, check_registry
from edgefleet.device.doctor.report import DoctorLimits
from tests.device.agent.test_loop import MODEL


def _config(tmp_path: Path, text: str = ""):
    path = tmp_path / "agent.yaml"
    path.write_text(f"device_id: cam-1\nmodel: {MODEL}\nroot: {tmp_path / 'root'}\n{text}")
    return load_config(path)


def test_the_registry_check_reads_the_channel(tmp_path):
    (tmp_path / "registry").mkdir()
    reachable = check_registry(_config(tmp_path, f"registry:\n  uri: {tmp_path / 'registry'}\n"), DoctorLimits())
    missing = check_registry(_config(tmp_path, f"registry:\n  uri: {tmp_path / 'nowhere'}\n"), DoctorLimits())

    assert reachable.status == "ok" and "no pointer yet" in reachable.detail
    assert missing.status == "fail" and missing.fix


def test_the_pubsub_check_connects_to_the_endpoint(tmp_path, monkeypatch):
    config = _config(tmp_path, "telemetry:\n  pubsub_project: demo\n")
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{listening.getsockname()[1]}")
        assert check_pubsub(config, DoctorLimits()).status == "ok"
        port = listening.getsockname()[1]
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{port}")  # closed now

    down = check_pubsub(config, DoctorLimits(connect_timeout_s=2))

    assert down.status == "fail" and "not reachable" in down.detail
