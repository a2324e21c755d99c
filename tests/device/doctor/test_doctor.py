"""`edgefleet-agent doctor`: each check on a host made to pass or fail it (a fake sysfs tree for the TPU
buses, the libedgetpu stand-ins for the library, real directories, sockets and a local registry)."""

from __future__ import annotations

import json
import socket
from datetime import datetime, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgefleet.device.agent.config import load_config
from edgefleet.device.cli import app
from edgefleet.device.doctor import (
    DoctorLimits,
    DoctorReport,
    blocking_failures,
    check_clock,
    check_device_permissions,
    check_disk,
    check_edgetpu_devices,
    check_libedgetpu,
    check_pubsub,
    check_registry,
    udev_rules_for_edgetpu,
)
from edgefleet.kernel.findings import Finding, Status, summary
from tests.device.agent.test_loop import MODEL

CORAL_MODEL = "mobilenet_v1_0.25_128_quant.tflite"


def usb_device(sys_root: Path, name: str, vendor: str, product: str, bus: int, number: int) -> None:
    device = sys_root / "bus" / "usb" / "devices" / name
    device.mkdir(parents=True)
    for key, value in {"idVendor": vendor, "idProduct": product, "busnum": bus, "devnum": number}.items():
        (device / key).write_text(f"{value}\n")


def test_edgetpus_are_found_by_usb_id_and_apex_node(tmp_path):
    sys_root, dev_root = tmp_path / "sys", tmp_path / "dev"
    dev_root.mkdir()
    usb_device(sys_root, "2-1", "18d1", "9302", 2, 3)
    usb_device(sys_root, "1-1", "1a6e", "089a", 1, 7)
    usb_device(sys_root, "1-2", "046d", "c52b", 1, 8)  # a mouse
    (dev_root / "apex_0").touch()

    check, nodes = check_edgetpu_devices(sys_root, dev_root, required=False)

    assert check.status == "ok"
    assert check.detail == "usb 1a6e:089a at 1-1, usb 18d1:9302 at 2-1, " + str(dev_root / "apex_0")
    assert nodes == [dev_root / "bus/usb/001/007", dev_root / "bus/usb/002/003", dev_root / "apex_0"]


@pytest.mark.parametrize("required, status", [(False, "warn"), (True, "fail")])
def test_no_edgetpu_warns_unless_the_tpu_is_required(tmp_path, required, status):
    usb_device(tmp_path / "sys", "1-2", "046d", "c52b", 1, 8)

    check, nodes = check_edgetpu_devices(tmp_path / "sys", tmp_path / "dev", required=required)

    assert (check.status, nodes) == (status, [])
    assert "1a6e:089a" in check.detail and "USB 3" in check.fix


def test_a_tpu_node_the_user_cannot_open_fails_with_the_groups_and_udev_fix(tmp_path):
    missing_node = tmp_path / "dev/bus/usb/002/003"  # sysfs has the TPU, udev made no node for it
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "99-edgetpu-accelerator.rules").write_text(
        'SUBSYSTEM=="usb",ATTRS{idVendor}=="1a6e",GROUP="plugdev"\n'
        'SUBSYSTEM=="usb",ATTRS{idVendor}=="18d1",GROUP="plugdev"\n')
    (rules / "50-other.rules").write_text('SUBSYSTEM=="usb",ATTRS{idVendor}=="046d"\n')

    found = udev_rules_for_edgetpu([str(rules)])
    check = check_device_permissions([missing_node], found, {"users"})

    assert found == [rules / "99-edgetpu-accelerator.rules"]
    assert check.status == "fail" and str(missing_node) in check.detail
    assert "usermod -aG plugdev,apex" in check.fix and "99-edgetpu-accelerator.rules" in check.fix


def test_libedgetpu_checks_follow_the_probe(standin_library, coral_data, monkeypatch, tmp_path):
    monkeypatch.setenv("STANDIN_EDGETPU_DEVICES", "usb:0")
    model = coral_data / CORAL_MODEL

    monkeypatch.delenv("STANDIN_EDGETPU_FAULT", raising=False)
    good = check_libedgetpu(standin_library, model, device=None, required=False, timeout_s=30)
    monkeypatch.setenv("STANDIN_EDGETPU_FAULT", "segv")
    crashing = check_libedgetpu(standin_library, model, device=None, required=False, timeout_s=30)
    unprobed = check_libedgetpu(standin_library, None, device=None, required=False, timeout_s=30)
    absent = check_libedgetpu(str(tmp_path / "libedgetpu.so.1"), model, device=None, required=False,
                              timeout_s=30)
    absent_required = check_libedgetpu(str(tmp_path / "libedgetpu.so.1"), model, device=None, required=True,
                                       timeout_s=30)

    assert good.status == "ok" and "ran one invoke" in good.detail and "not from a Debian package" in good.detail
    assert crashing.status == "fail" and "crash" in crashing.detail and "libedgetpu" in crashing.fix
    assert unprobed.status == "warn" and "loads" in unprobed.detail
    assert (absent.status, absent_required.status) == ("warn", "fail")


def test_a_library_that_does_not_load_fails_even_without_a_model(unloadable_library):
    check = check_libedgetpu(unloadable_library, None, device=None, required=False, timeout_s=30)

    assert check.status == "fail" and "undefined symbol" in check.detail


def test_disk_and_clock_thresholds(tmp_path):
    roomy = DoctorLimits(disk_warn_bytes=0, disk_fail_bytes=0)
    tight = DoctorLimits(disk_warn_bytes=10**18, disk_fail_bytes=0)
    full = DoctorLimits(disk_warn_bytes=10**18, disk_fail_bytes=10**18)
    assert [check_disk(tmp_path / "not-yet", limits).status for limits in (roomy, tight, full)] == \
        ["ok", "warn", "fail"]

    limits = DoctorLimits()
    unset = datetime(1970, 1, 1, tzinfo=timezone.utc)
    now = datetime(2026, 6, 1, tzinfo=timezone.utc)
    assert check_clock(unset, limits, None).status == "fail"
    assert "timedatectl set-ntp true" in check_clock(unset, limits, None).fix
    assert check_clock(now, limits, False).status == "warn"
    assert check_clock(now, limits, True).status == "ok"


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


def test_tpu_failures_block_a_rollout_only_where_the_tpu_is_required():
    report = DoctorReport(checks=(
        Finding(name="libedgetpu", status=Status.FAIL, detail="crash", fix="x"),
        Finding(name="disk", status=Status.FAIL, detail="full", fix="y"),
        Finding(name="pubsub", status=Status.FAIL, detail="unreachable", fix="z"),  # the spool holds telemetry
        Finding(name="clock", status=Status.WARN, detail="not synchronized"),
    ))

    assert [c.name for c in blocking_failures(report, tpu_required=False)] == ["disk"]
    assert [c.name for c in blocking_failures(report, tpu_required=True)] == ["libedgetpu", "disk"]


def test_doctor_json_lists_every_check_and_exits_1_on_a_failure(releases, standin_library, monkeypatch):
    monkeypatch.setenv("STANDIN_EDGETPU_DEVICES", "usb:0")
    monkeypatch.setenv("STANDIN_EDGETPU_FAULT", "segv")
    releases.install("1.0.0", edgetpu_variant=True)
    (releases.root / "agent.yaml").write_text(
        f"device_id: cam-1\nmodel: {MODEL}\ninference:\n  edgetpu_library: {standin_library}\n")

    result = CliRunner().invoke(app, ["doctor", "--root", str(releases.root), "--json"])

    assert result.exit_code == 1, result.output
    checks = json.loads(result.stdout)["checks"]
    assert all(set(check) == {"name", "status", "detail", "fix"} for check in checks)
    by_name = {check["name"]: check for check in checks}
    assert [name for name in by_name] == [
        "config", "python", "runtime", "libedgetpu", "edgetpu_devices", "device_permissions", "store", "spool",
        "disk", "clock", "credentials", "registry", "pubsub", "telemetry", "public_key"]
    assert by_name["libedgetpu"]["status"] == "fail" and "SIGSEGV" in by_name["libedgetpu"]["detail"]
    assert "model_edgetpu.tflite" in by_name["libedgetpu"]["detail"]
    assert by_name["config"]["status"] == "ok" and by_name["public_key"]["status"] == "ok"
    assert by_name["store"]["status"] == "ok"
    report = DoctorReport.model_validate_json(result.stdout)  # what a rollout's preflight reads: Findings
    assert [check.name for check in report.checks] == list(by_name)
    assert [check.name for check in report.failed] == ["libedgetpu"] and report.checks[3].status is Status.FAIL

    table = CliRunner().invoke(app, ["doctor", "--root", str(releases.root)], env={"COLUMNS": "400"})
    assert table.exit_code == 1, table.output
    [row] = [line for line in table.output.splitlines() if "libedgetpu" in line and "SIGSEGV" in line]
    assert "fail" in row
    assert summary(report.checks).startswith(f"{sum(c['status'] == 'ok' for c in checks)} ok, 1 failed")
    assert summary(report.checks) in table.output
