"""`edgefleet-agent doctor`: checks a Coral host the way its user needs, each check ok / warn / fail + a fix.

What is read from the host (sysfs, /dev, udev rules, the store, the clock, the network) is separate from the
judgement of each check, so that every check takes the host's roots as arguments and is testable on a fake
sysfs tree. `fail` means the agent cannot do its job as configured; `warn` means it runs, but worse (on the
CPU, say). The rollout's preflight runs `doctor --json` on each device and blocks only on the failures that
matter for the version it rolls out (`blocking_failures`).

One module per concern: `host` (Python, runtime, store, spool, disk, clock), `edgetpu` (libedgetpu, the TPUs on the
buses, who may open them; `agent_tpu`: what a running agent holding the TPU recorded), `camera`, `cloud` (registry,
Pub/Sub; `credentials`, `pointer`), `trust` (the release keyring); `report` holds the report, the limits and which
failures block a rollout. `run_doctor` runs them all.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from edgefleet.device.doctor.agent_tpu import read_agent_tpu
from edgefleet.device.doctor.camera import camera_findings
from edgefleet.device.doctor.cloud import check_credentials, check_pubsub, check_registry, check_telemetry
from edgefleet.device.doctor.edgetpu import (
    check_device_permissions,
    check_edgetpu_devices,
    check_libedgetpu,
    udev_rules_for_edgetpu,
    user_groups,
)
from edgefleet.device.doctor.host import (
    check_clock,
    check_disk,
    check_python,
    check_runtime,
    check_writable,
    ntp_synchronized,
)
from edgefleet.device.doctor.report import NEVER_BLOCKING, TPU_CHECKS, DoctorLimits, DoctorReport, blocking_failures
from edgefleet.device.doctor.trust import check_public_key
from edgefleet.kernel.errors import EdgefleetError

if TYPE_CHECKING:
    from edgefleet.device.agent.config import AgentConfig

__all__ = [
    "NEVER_BLOCKING", "TPU_CHECKS", "DoctorLimits", "DoctorReport", "blocking_failures", "check_clock",
    "check_credentials", "check_device_permissions", "check_disk", "check_edgetpu_devices", "check_libedgetpu",
    "check_public_key", "check_pubsub", "check_python", "check_registry", "check_runtime", "check_telemetry",
    "check_writable", "edgetpu_model", "run_doctor", "udev_rules_for_edgetpu",
]


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
