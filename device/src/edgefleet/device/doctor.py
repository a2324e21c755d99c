"""`edgefleet-agent doctor`: checks a Coral host the way its user needs, each check ok / warn / fail + a fix.

What is read from the host (sysfs, /dev, udev rules, the store, the clock, the network) is separate from the
judgement of each check, so that every check takes the host's roots as arguments and is testable on a fake
sysfs tree. `fail` means the agent cannot do its job as configured; `warn` means it runs, but worse (on the
CPU, say). The rollout's preflight runs `doctor --json` on each device and blocks only on the failures that
matter for the version it rolls out (`blocking_failures`).
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from edgefleet.device.doctor_camera import camera_findings
from edgefleet.device.doctor_edgetpu import AgentTpu, held_summary, read_agent_tpu
from edgefleet.device.runtime.probe import locate_library, matching_build_fix, probe_edgetpu, runtime_version
from edgefleet.kernel.errors import EdgefleetError
from edgefleet.kernel.findings import Finding, Status, failures

if TYPE_CHECKING:
    from edgefleet.device.agent.config import AgentConfig

# USB ids of the Coral USB Accelerator: before its firmware is loaded (Global Unichip) and after (Google).
EDGETPU_USB_IDS = (("1a6e", "089a"), ("18d1", "9302"))
TPU_GROUPS = ("plugdev", "apex")
UDEV_RULE_DIRS = ("/etc/udev/rules.d", "/lib/udev/rules.d", "/usr/lib/udev/rules.d")
# Checks whose failure means "no usable Edge TPU": they block a rollout only where the TPU is required.
TPU_CHECKS = frozenset({"libedgetpu", "edgetpu_devices", "device_permissions"})
# Failures a rollout goes on with: telemetry waits in the spool, the health gate falls back to the agent's
# status over SSH. Credentials block through what needs them (a gs:// registry's own check), not by themselves.
NEVER_BLOCKING = frozenset({"pubsub", "credentials", "telemetry"})


class DoctorReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    checks: tuple[Finding, ...]
    tpu_required: bool = Field(default=False, description="the agent's inference.require_edgetpu")

    @property
    def failed(self) -> tuple[Finding, ...]:
        return failures(self.checks)


class DoctorLimits(BaseModel):
    """Thresholds of the checks (the agent config's defaults; not per-device tuning)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    disk_warn_bytes: int = Field(default=500 * 10**6, ge=0, description="free space below this: warn")
    disk_fail_bytes: int = Field(default=100 * 10**6, ge=0, description="free space below this: fail")
    clock_floor: datetime = Field(default=datetime(2025, 1, 1, tzinfo=timezone.utc),
                                  description="a clock before this is unset (signed pointers would not verify)")
    connect_timeout_s: float = Field(default=5.0, gt=0, description="registry / Pub/Sub reachability")
    probe_timeout_s: float = Field(default=30.0, gt=0, description="the Edge TPU probe")


def blocking_failures(report: DoctorReport, *, tpu_required: bool) -> tuple[Finding, ...]:
    """The failures that block a rollout: all of them but Pub/Sub's, and the TPU's only when it is required."""
    return tuple(check for check in report.failed
                 if check.name not in NEVER_BLOCKING and (tpu_required or check.name not in TPU_CHECKS))


def _ok(name: str, detail: str) -> Finding:
    return Finding(name=name, status=Status.OK, detail=detail)


# --- Python and runtime -------------------------------------------------------------------------------------
def check_python(version: tuple[int, int, int] = sys.version_info[:3]) -> Finding:
    text = ".".join(map(str, version))
    if version[:2] < (3, 9):
        return Finding(name="python", status=Status.FAIL, detail=f"Python {text}",
                       fix="the agent needs Python 3.9-3.13: on Mendel Linux (3.7) use a Coral USB Accelerator on "
                           "a supported host instead")
    if version[:2] > (3, 13):
        return Finding(name="python", status=Status.WARN, detail=f"Python {text}: newer than the tested 3.13",
                       fix="use Python 3.9-3.13 if LiteRT has no wheel or misbehaves")
    return _ok("python", f"Python {text} ({sys.executable})")


def check_runtime() -> Finding:
    runtime = runtime_version()
    if runtime.startswith("an unknown"):
        return Finding(name="runtime", status=Status.FAIL, detail="no TensorFlow Lite runtime is installed",
                       fix="pip install 'edgefleet[device]' (brings ai-edge-litert)")
    return _ok("runtime", runtime)


# --- libedgetpu --------------------------------------------------------------------------------------------
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
        return _ok("libedgetpu", f"{build}: {outcome.detail} with {outcome.runtime}")
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
    return _ok("edgetpu_devices", ", ".join(names)), nodes


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
        return _ok("device_permissions", "no Edge TPU node to check")
    denied = [str(node) for node in nodes if not os.access(node, os.R_OK | os.W_OK)]
    rules_text = ", ".join(str(rule) for rule in rules) or "no udev rule for 1a6e/18d1"
    if denied:
        return Finding(name="device_permissions", status=Status.FAIL,
                       detail=f"user {user} cannot open {', '.join(denied)} (groups: {', '.join(sorted(groups))}; "
                              f"{rules_text})",
                       fix=f"sudo usermod -aG plugdev,apex {user} and install the udev rules that "
                           "libedgetpu1-std ships (99-edgetpu-accelerator.rules), then replug and log in again")
    return _ok("device_permissions", f"user {user} can open {len(nodes)} Edge TPU node(s); {rules_text}")


# --- store, spool, disk, clock ------------------------------------------------------------------------------
def _writable_dir(path: Path) -> bool:
    probe = path
    while not probe.exists():
        probe = probe.parent
    return probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)


def check_writable(name: str, path: Path) -> Finding:
    target = path if path.suffix == "" else path.parent
    if path.exists() and path.is_file() and not os.access(path, os.W_OK):
        return Finding(name=name, status=Status.FAIL, detail=f"{path} is not writable",
                       fix=f"chown it to the agent's user (sudo chown edgefleet {path})")
    if not _writable_dir(target):
        return Finding(name=name, status=Status.FAIL, detail=f"{target} is not writable by this user",
                       fix=f"create it for the agent's user: sudo install -d -o edgefleet {target}")
    return _ok(name, f"{path} writable")


def check_disk(root: Path, limits: DoctorLimits) -> Finding:
    existing = root
    while not existing.exists():
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    detail = f"{free / 1e6:.0f} MB free at {existing}"
    fix = "free space (edgefleet-agent models; remove old versions) or move the agent root"
    if free < limits.disk_fail_bytes:
        return Finding(name="disk", status=Status.FAIL, detail=detail, fix=fix)
    if free < limits.disk_warn_bytes:
        return Finding(name="disk", status=Status.WARN, detail=detail, fix=fix)
    return _ok("disk", detail)


def check_clock(now: datetime, limits: DoctorLimits, synchronized: bool | None) -> Finding:
    if now < limits.clock_floor:
        return Finding(name="clock", status=Status.FAIL, detail=f"the clock says {now:%Y-%m-%d %H:%M} UTC",
                       fix="set the time and keep it synchronized: sudo timedatectl set-ntp true")
    if synchronized is False:
        return Finding(name="clock", status=Status.WARN, detail=f"{now:%Y-%m-%d %H:%M} UTC, not NTP-synchronized",
                       fix="sudo timedatectl set-ntp true (signed channel pointers expire)")
    return _ok("clock", f"{now:%Y-%m-%d %H:%M} UTC")


def ntp_synchronized() -> bool | None:
    try:
        shown = subprocess.run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"], capture_output=True,
                               text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    value = shown.stdout.strip()
    return {"yes": True, "no": False}.get(value) if shown.returncode == 0 else None


# --- cloud and trust ----------------------------------------------------------------------------------------
def check_registry(config: AgentConfig, limits: DoctorLimits) -> Finding:
    if not config.registry.uri:
        return _ok("registry", "push mode: no registry to reach (rollouts bring the versions)")
    from edgefleet.device.registry import RegistryOptions, open_registry_reader

    try:
        registry = open_registry_reader(config.registry.uri, credentials_file=config.credentials_file,
                                        options=RegistryOptions(request_timeout_s=limits.connect_timeout_s,
                                                                retry_deadline_s=limits.connect_timeout_s))
        state = registry.read_channel(config.model, config.registry.channel)
    except EdgefleetError as error:
        return Finding(name="registry", status=Status.FAIL, detail=error.message, fix=error.fix)
    except Exception as error:  # noqa: BLE001 - credentials, DNS, HTTP: all "not reachable" for the user
        return Finding(name="registry", status=Status.FAIL,
                       detail=f"{config.registry.uri}: {type(error).__name__}: {error}"[:400],
                       fix="check the network and the device's credentials (credentials_file in agent.yaml)")
    where = f"{config.registry.uri} reachable; {config.model}/{config.registry.channel}"
    if state.pointer is None:
        return _ok("registry", f"{where}: no pointer yet")
    from edgefleet.device.doctor_pointer import pointer_check

    status, detail, fix = pointer_check(config, state.pointer, source=registry.uri)
    return Finding(name="registry", status=status, detail=f"{where}: {detail}", fix=fix)


def _endpoint_reachable(host: str, port: int, timeout_s: float) -> str | None:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except OSError as error:
        return f"{host}:{port}: {error}"


def check_pubsub(config: AgentConfig, limits: DoctorLimits) -> Finding:
    telemetry = config.telemetry
    if not telemetry.pubsub_project:
        return _ok("pubsub", "telemetry goes to a local file (no pubsub_project)")
    emulator = os.environ.get("PUBSUB_EMULATOR_HOST")
    if emulator:
        host, _, port = emulator.rpartition(":")
        where = (host, int(port))
    else:
        where = ("pubsub.googleapis.com", 443)
        from edgefleet.device.doctor_credentials import credentials_problem

        problem = credentials_problem(config.credentials_file)
        if problem is not None:
            return Finding(name="pubsub", status=Status.FAIL, detail=problem.message[:400], fix=problem.fix)
    problem = _endpoint_reachable(*where, limits.connect_timeout_s)
    if problem:
        return Finding(name="pubsub", status=Status.FAIL, detail=f"Pub/Sub not reachable: {problem}",
                       fix="check the network (telemetry waits in the spool meanwhile)")
    return _ok("pubsub", f"{where[0]}:{where[1]} reachable, topic {telemetry.pubsub_project}/"
                         f"{telemetry.pubsub_topic}")


def check_credentials(config: AgentConfig) -> Finding:
    """`credentials_file` from agent.yaml, as the service reads it (`edgefleet.device.doctor_credentials`)."""
    from edgefleet.device.doctor_credentials import credentials_finding

    return credentials_finding(config)


def check_telemetry(config: AgentConfig) -> Finding:
    """What the running agent's status says of its telemetry (never blocking)."""
    from edgefleet.device.doctor_credentials import telemetry_finding

    return telemetry_finding(config)


def check_public_key(path: Path) -> Finding:
    """The release keyring (a key file, the `<name>.d/` keyring beside it, or a keyring directory): it loads,
    every file in it is trusted, and none of it is in the agent user's reach."""
    from edgefleet.kernel.trust.release_keyring import load_keyring

    try:
        ring = load_keyring(path)
    except EdgefleetError as error:
        return Finding(name="public_key", status=Status.FAIL, detail=error.message,
                       fix="install the release public key (deploy-agent does) at this path")
    if ring.problems:
        return Finding(name="public_key", status=Status.FAIL, detail="; ".join(ring.problems),
                       fix="name each key file of the keyring by its key id (edgefleet keys add does), or remove it; "
                           "deploy-agent installs the keyring so")
    from edgefleet.device.trust.anchor import ring_exposure

    try:
        exposed = ring_exposure(path)
    except OSError as error:
        return Finding(name="public_key", status=Status.FAIL, detail=f"{path}: cannot examine the way to it: {error}",
                       fix="make the key and every directory above it readable (and owned by root)")
    if exposed is not None:
        what = "it" if exposed == path else f"the directory {exposed} above it"
        return Finding(name="public_key", status=Status.FAIL,
                       detail=f"the trust anchor {path} is in reach of the agent's user: it can change or rename "
                              f"{what} and plant its own release key",
                       fix=f"re-run deploy-agent (it keeps the key in a root-owned config directory), or: sudo chown "
                           f"root:root {exposed} && sudo chmod go-w {exposed}; the key and every directory above it "
                           "must be root's and not writable by the agent's user")
    return _ok("public_key", ring.describe())


# --- all together -------------------------------------------------------------------------------------------
def edgetpu_model(config: AgentConfig) -> Path | None:
    """The edgetpu variant of the current version of the configured model, when installed."""
    from edgefleet.device.store_reader import StoreReader

    try:
        installed = StoreReader(config.root).current(config.model)
        if installed is None:
            return None
        manifest = installed.manifest
    except (EdgefleetError, OSError, ValueError):
        return None
    name = manifest.variants.get("edgetpu")
    return installed.path / name if name else None


def run_doctor(config: AgentConfig, *, sys_root: Path = Path("/sys"), dev_root: Path = Path("/dev"),
               limits: DoctorLimits | None = None) -> DoctorReport:
    """Every check, in the order a Coral user would go through them."""
    limits = limits or DoctorLimits(probe_timeout_s=config.inference.probe_timeout_s)
    inference = config.inference
    wants_tpu = inference.device != "cpu"
    required = inference.require_edgetpu
    checks = [check_python(), check_runtime()]
    if wants_tpu:
        device = None if inference.device == "auto" else inference.device
        checks.append(check_libedgetpu(inference.edgetpu_library, edgetpu_model(config), device=device,
                                       required=required, timeout_s=limits.probe_timeout_s,
                                       agent=read_agent_tpu(config.status_path)))
        devices, nodes = check_edgetpu_devices(sys_root, dev_root, required=required)
        checks += [devices, check_device_permissions(nodes, udev_rules_for_edgetpu(), user_groups())]
    checks += camera_findings(config.source, dev_root, user_groups())
    checks += [
        check_writable("store", config.root / "models"),
        check_writable("spool", config.spool_path),
        check_disk(config.root, limits),
        check_clock(datetime.fromtimestamp(time.time(), tz=timezone.utc), limits, ntp_synchronized()),
        check_credentials(config),
        check_registry(config, limits),
        check_pubsub(config, limits),
        check_telemetry(config),
        check_public_key(config.public_key_path),
    ]
    return DoctorReport(checks=tuple(checks), tpu_required=required)
