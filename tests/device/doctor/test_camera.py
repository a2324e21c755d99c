"""`doctor` checks a camera source's access (review of issue 22, item 6): the agent's user in `video` (which
deploy-agent now adds, flows/deploy_agent/device_access.py) and the camera's node there to open.

Before: doctor had no camera line, so a camera device whose user was not in `video` passed the preflight and
the agent crash-looped at its first frame."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet.device.agent.config import load_config
from edgefleet.device.doctor import DoctorLimits, blocking_failures, run_doctor
from edgefleet.device.doctor.camera import CameraHost, camera_finding
from tests.device.agent.test_loop import MODEL


def _host(tmp_path: Path, *, groups=("edgefleet", "plugdev"), root=False, exists=True, openable=True) -> CameraHost:
    return CameraHost(user="edgefleet", root=root, groups=frozenset(groups), node=tmp_path / "dev" / "video0",
                      node_exists=exists, node_openable=openable)


def test_a_user_outside_video_fails_with_the_usermod_fix(tmp_path):
    finding = camera_finding(_host(tmp_path))
    assert finding.status == "fail"
    assert "edgefleet is not in the video group" in finding.detail and "video0" in finding.detail
    assert "sudo usermod -aG video edgefleet" in finding.fix and "deploy-agent" in finding.fix


@pytest.mark.parametrize(("host", "status", "named"), [
    ({"groups": ("edgefleet", "video")}, "ok", "in video"),
    ({"groups": ("video",), "exists": False}, "fail", "no camera at source.camera_index 0"),
    ({"groups": ("video",), "openable": False}, "fail", "cannot open"),
    ({"groups": (), "root": True}, "ok", "root"),
])
def test_the_camera_line_follows_group_node_and_access(tmp_path, host, status, named):
    finding = camera_finding(_host(tmp_path, **host))
    assert (finding.status, named in finding.detail) == (status, True), finding
    assert (finding.fix is None) == (status == "ok")


def _config(tmp_path: Path, source: str):
    path = tmp_path / "agent.yaml"
    path.write_text(f"device_id: cam-1\nmodel: {MODEL}\nroot: {tmp_path / 'root'}\n{source}"
                    "inference:\n  device: cpu\n")
    return load_config(path)


def test_doctor_has_a_camera_line_for_a_camera_source_only_and_it_blocks_a_rollout(tmp_path):
    dev = tmp_path / "dev"
    dev.mkdir()
    limits = DoctorLimits(connect_timeout_s=1)
    camera = run_doctor(_config(tmp_path, "source:\n  kind: camera\n  camera_index: 2\n"), dev_root=dev,
                        limits=limits)
    images = run_doctor(_config(tmp_path, ""), dev_root=dev, limits=limits)

    line = next(check for check in camera.checks if check.name == "camera")
    assert line.status == "fail" and str(dev / "video2") in line.detail and line.fix
    assert "camera" in [check.name for check in blocking_failures(camera, tpu_required=False)]
    assert "camera" not in [check.name for check in images.checks]
