"""`doctor`'s Edge TPU checks on a host made to pass or fail them: a fake sysfs tree for the buses, udev rules in a
temporary directory, the libedgetpu stand-ins for the library."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet.device.doctor.edgetpu import (
    check_device_permissions,
    check_edgetpu_devices,
    check_libedgetpu,
    udev_rules_for_edgetpu,
)

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
