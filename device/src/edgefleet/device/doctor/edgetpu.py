"""`doctor`'s Edge TPU checks: libedgetpu (found, loadable, able to run a model; or what the running agent that
holds the TPU recorded, `edgefleet.device.doctor.agent_tpu`), the TPUs on the USB and PCIe buses, and whether this
user may open them. Each takes the host's roots (sysfs, /dev, udev rule directories) as arguments."""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from edgefleet.device.doctor.agent_tpu import AgentTpu, held_summary
from edgefleet.device.doctor.report import ok
from edgefleet.device.runtime.probe import locate_library, matching_build_fix, probe_edgetpu, runtime_version
from edgefleet.kernel.findings import Finding, Status

# USB ids of the Coral USB Accelerator: before its firmware is loaded (Global Unichip) and after (Google).
EDGETPU_USB_IDS = (("1a6e", "089a"), ("18d1", "9302"))
TPU_GROUPS = ("plugdev", "apex")
UDEV_RULE_DIRS = ("/etc/udev/rules.d", "/lib/udev/rules.d", "/usr/lib/udev/rules.d")


def library_build(path: Path) -> str:
    """Which build a libedgetpu file is: its Debian package and version when dpkg knows it, else its file."""
    real = path.resolve() if path.is_absolute() else path
    try:
        owner = subprocess.run(["dpkg-query", "-S", str(real)], capture_output=True, text=True, timeout=10)
        package = owner.stdout.split(":", 1)[0].strip() if owner.returncode == 0 else ""
        if package:
            version = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True,
                                     text=True, timeout=10).stdout.strip()
            return f"{package} {version} ({real})"
    except (OSError, subprocess.SubprocessError):
        pass
    return f"{real.name} (not from a Debian package)"


def check_libedgetpu(library: str, model: Path | None, *, device: str | None, required: bool,
                     timeout_s: float, agent: AgentTpu | None = None) -> Finding:
    """Found, loadable and (with an Edge TPU model at hand) able to create an interpreter and invoke; while
    `agent` holds the TPU, what its probe recorded (no probe: it would fight the agent for the TPU)."""
    located = locate_library(library)
    if located is None:
        return Finding(name="libedgetpu", status=Status.FAIL if required else Status.WARN,
                       detail=f"{library} not found: models run on the CPU",
                       fix="install libedgetpu (README: supported hosts) or set inference.edgetpu_library")
    build = library_build(located)
    if agent is not None:
        status, detail, fix = held_summary(agent)
        return Finding(name="libedgetpu", status=status, detail=f"{build}: {detail}", fix=fix)
    if model is None:
        loaded = subprocess.run([sys.executable, "-c", "import ctypes, sys; ctypes.CDLL(sys.argv[1])", library],
                                capture_output=True, text=True, timeout=timeout_s)
        if loaded.returncode != 0:
            return Finding(name="libedgetpu", status=Status.FAIL,
                           detail=f"{build} does not load: {loaded.stderr.strip()[-300:]}",
                           fix=matching_build_fix(library, runtime_version()))
        return Finding(name="libedgetpu", status=Status.WARN,
                       detail=f"{build} loads; no installed Edge TPU model to probe an interpreter with",
                       fix="re-run doctor once a release with an edgetpu variant is installed")
    outcome = probe_edgetpu(model, device=device, library=library, timeout_s=timeout_s)
    if outcome.ok:
        return ok("libedgetpu", f"{build}: {outcome.detail} with {outcome.runtime}")
    return Finding(name="libedgetpu", status=Status.FAIL, detail=f"{build}: {outcome.summary()}", fix=outcome.fix)


# --- TPUs on the buses, and who may open them -------------------------------------------------------------
def usb_edgetpus(sys_root: Path) -> list[Path]:
    """The sysfs directories of USB devices with an Edge TPU's vendor:product id."""
    found: list[Path] = []
    for device in sorted((sys_root / "bus" / "usb" / "devices").glob("*")):
        try:
            ids = ((device / "idVendor").read_text().strip(), (device / "idProduct").read_text().strip())
        except OSError:
            continue
        if ids in EDGETPU_USB_IDS:
            found.append(device)
    return found


def usb_device_node(sysfs_device: Path, dev_root: Path) -> Path:
    """/dev/bus/usb/BBB/DDD of a sysfs USB device."""
    bus = int((sysfs_device / "busnum").read_text())
    number = int((sysfs_device / "devnum").read_text())
    return dev_root / "bus" / "usb" / f"{bus:03d}" / f"{number:03d}"


def check_edgetpu_devices(sys_root: Path, dev_root: Path, *, required: bool) -> tuple[Finding, list[Path]]:
    """Edge TPUs visible: USB ids 1a6e:089a / 18d1:9302 in sysfs, PCIe `/dev/apex_*`. Returns their nodes."""
    usb = usb_edgetpus(sys_root)
    apex = sorted(dev_root.glob("apex_*"))
    nodes = [usb_device_node(device, dev_root) for device in usb if (device / "busnum").exists()] + apex
    if not usb and not apex:
        return Finding(name="edgetpu_devices", status=Status.FAIL if required else Status.WARN,
                       detail="no Edge TPU: no USB 1a6e:089a/18d1:9302 and no /dev/apex_*",
                       fix="plug the USB Accelerator in (USB 3 port), or install the PCIe driver (gasket-dkms) "
                           "for an M.2/PCIe module; then re-run doctor"), nodes
    names = [f"usb {(d / 'idVendor').read_text().strip()}:{(d / 'idProduct').read_text().strip()} at {d.name}"
             for d in usb] + [str(node) for node in apex]
    return ok("edgetpu_devices", ", ".join(names)), nodes


def udev_rules_for_edgetpu(rule_dirs: Iterable[str] = UDEV_RULE_DIRS) -> list[Path]:
    """udev rule files that mention the Edge TPU's USB vendor ids."""
    found: list[Path] = []
    for directory in rule_dirs:
        for rule in sorted(Path(directory).glob("*.rules")):
            try:
                text = rule.read_text(errors="replace")
            except OSError:
                continue
            if "1a6e" in text and "18d1" in text:
                found.append(rule)
    return found


def user_groups() -> set[str]:
    names: set[str] = set()
    for gid in os.getgroups() + [os.getegid()]:
        try:
            names.add(grp.getgrgid(gid).gr_name)
        except KeyError:
            continue
    return names


def check_device_permissions(nodes: list[Path], rules: list[Path], groups: set[str]) -> Finding:
    """Can this user open the TPU nodes (plugdev/apex groups, udev rules)?"""
    try:
        user = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # a uid without a passwd entry (some containers)
        user = str(os.geteuid())
    if not nodes:
        return ok("device_permissions", "no Edge TPU node to check")
    denied = [str(node) for node in nodes if not os.access(node, os.R_OK | os.W_OK)]
    rules_text = ", ".join(str(rule) for rule in rules) or "no udev rule for 1a6e/18d1"
    if denied:
        return Finding(name="device_permissions", status=Status.FAIL,
                       detail=f"user {user} cannot open {', '.join(denied)} (groups: {', '.join(sorted(groups))}; "
                              f"{rules_text})",
                       fix=f"sudo usermod -aG plugdev,apex {user} and install the udev rules that "
                           "libedgetpu1-std ships (99-edgetpu-accelerator.rules), then replug and log in again")
    return ok("device_permissions", f"user {user} can open {len(nodes)} Edge TPU node(s); {rules_text}")
