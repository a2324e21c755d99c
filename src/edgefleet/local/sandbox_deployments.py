"""The sandbox's settings and its prefect.yaml: the project's deployments, parameterized to one local fleet.

Pure (no I/O but reading the base file): `sandbox_prefect_document` takes the project's prefect.yaml as a
mapping and the sandbox's paths, and returns the same deployments with their parameters pointing at the
sandbox (inventory, registry, signing key, monitor config), schedules of minutes for the promotion and the
fleet overview, and the emulator's address in the work pool's environment. Deployments the sandbox does not
know are kept as they are.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from edgefleet.kernel.errors import ConfigError
from edgefleet.local.workdir import WorkdirFiles

REPO = Path(__file__).resolve().parents[3]  # src/edgefleet/local/<module>
# Deployments the sandbox parameterizes (their names in prefect.yaml).
RELEASE, ROLLOUT, PROMOTE, DEPLOY_AGENT, MONITOR, OVERVIEW, PULL_ROLLOUT = (
    "release-model", "rollout", "promote-canary", "deploy-agent", "fleet-monitor", "fleet-overview", "pull-rollout")
REQUIRED = (RELEASE, ROLLOUT, PROMOTE, DEPLOY_AGENT, MONITOR)

SANDBOX_WORK_POOL = "edgefleet-process"


class SandboxSettings(WorkdirFiles, BaseModel):
    """Every knob of `make sandbox` (defaults sized for a 2-core machine)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    workdir: Path = Field(default=REPO / ".edgefleet" / "sandbox", description="everything the sandbox writes")
    devices: int = Field(default=3, ge=1, le=20, description="simulated devices (SANDBOX_DEVICES)")
    port: int = Field(default=4200, ge=0, le=65535, description="Prefect UI port; 0: any free port")
    project: str = Field(default="edgefleet-sandbox", min_length=6, description="emulator project id")
    model: str = "shapes"
    run_schedules: bool = Field(default=True, description="off: promote-canary and fleet-overview do not run "
                                                          "by themselves (the browser test)")
    release_epochs: int = Field(default=3, ge=1, description="release-model's default training epochs")
    device_max_fps: float = Field(default=20.0, gt=0, description="a wave gets the canary's 300 inferences in "
                                                                  "about 15 s, and 3 agents stay light")
    summary_interval_s: float = Field(default=1.0, gt=0, description="agent telemetry summary period")
    frames_per_class: int = Field(default=4, ge=1, description="sample images each device cycles through")
    monitor_bucket_s: float = Field(default=5.0, gt=0, description="the monitor's time buckets (short-lived "
                                                                   "versions still get their own)")
    promote_every_s: int = Field(default=120, ge=60, description="promote-canary's schedule")
    healthy_for_s: float = Field(default=60.0, gt=0, description="promote-canary: canary healthy this long")
    overview_every_s: int = Field(default=60, ge=60, description="fleet-overview's schedule")
    waves: tuple[int | str, ...] = Field(default=(1, "100%"), description="rollout's waves: canary, then all")
    deploy_agent_timeout_s: float = Field(default=600.0, gt=0, description="the deploy-agent run, all devices")
    monitor_ready_timeout_s: float = Field(default=120.0, gt=0, description="fleet-monitor run creates its store")
    poll_interval_s: float = Field(default=1.0, gt=0, description="the watch loop's period")
    monitor_check_s: float = Field(default=15.0, gt=0, description="how often the watch asks the API about the "
                                                                   "fleet-monitor run")
    stop_timeout_s: float = Field(default=20.0, gt=0, description="SIGTERM, then SIGKILL after this long")

    @property
    def registry(self) -> Path:
        return self.registry_dir

    @property
    def signing_key(self) -> Path:
        return self.release_key

    @property
    def monitor_config(self) -> Path:
        return self.monitor_config_path

    @property
    def install_dir(self) -> Path:
        """deploy-agent's install_dir: the venv, and etc/<device id>/ (agent.yaml, release key, service files)."""
        return self.workdir / "opt"

    @property
    def config_dir(self) -> Path:
        return self.install_dir / "etc"

    @property
    def inventory(self) -> Path:
        return self.fleet_dir / "fleet.yaml"

    @property
    def frames(self) -> Path:
        return self.workdir / "frames"

    @property
    def prefect_yaml(self) -> Path:
        return self.workdir / "prefect.yaml"

    @property
    def overview_html(self) -> Path:
        return self.workdir / "fleet-overview.html"

    @property
    def state_file(self) -> Path:
        return self.workdir / "sandbox.json"


def agent_fields(settings: SandboxSettings) -> dict[str, Any]:
    """agent.yaml fields of every simulated device (deploy-agent fills in device_id and root)."""
    return {
        "model": settings.model,
        "source": {"kind": "images", "path": str(settings.frames), "max_fps": settings.device_max_fps},
        "telemetry": {"mode": "summary", "summary_interval_s": settings.summary_interval_s,
                      "pubsub_project": settings.project},
        "swap": {"watch_interval_s": 0.5},
    }


def sandbox_parameters(settings: SandboxSettings, emulator_host: str, python: str,
                       site_packages: str) -> dict[str, dict[str, Any]]:
    """Deployment name -> the `params` fields the sandbox sets (merged over prefect.yaml's)."""
    common = {"inventory": str(settings.inventory), "registry": str(settings.registry), "model": settings.model}
    return {
        RELEASE: {"model": settings.model, "registry": str(settings.registry), "channel": "canary",
                  "work_dir": str(settings.workdir / "release-work"),
                  "training": {"epochs": settings.release_epochs},
                  "signing": {"dev_key_file": str(settings.signing_key)}},
        ROLLOUT: {**common, "channel": "canary", "waves": list(settings.waves),
                  "public_key": f"{settings.signing_key}.pub",
                  "monitor_config": str(settings.monitor_config),
                  "work_dir": str(settings.workdir / "rollout-work")},
        PULL_ROLLOUT: {"registry": str(settings.registry), "model": settings.model,
                       "monitor_config": str(settings.monitor_config), "public_key": f"{settings.signing_key}.pub",
                       "signing": {"dev_key_file": str(settings.signing_key)}},
        PROMOTE: {**common, "monitor_config": str(settings.monitor_config),
                  "healthy_for_s": settings.healthy_for_s},
        DEPLOY_AGENT: {
            "inventory": str(settings.inventory), "public_key": f"{settings.signing_key}.pub",
            "registry": str(settings.registry),  # each device's own key, for the monitor's signature check
            "enrolment": {"dev_key_file": str(settings.enrolment_key)},  # signs those key records
            "service_manager": "process", "install_dir": str(settings.install_dir), "python": python,
            # The simulated devices are this machine: the agents run as the sandbox's own user (an explicit
            # choice) rather than as a system user created on a developer's machine. Their config and release
            # key are root's (the user's) in <install_dir>/etc all the same.
            "agent_user": None,
            # Offline: the wheel alone, its dependencies seen through a .pth file (no network here).
            "no_deps": True, "extra_site_dirs": [site_packages],
            # The simulated devices share this machine and so one install_dir: one device at a time.
            "max_parallel": 1,
            "environment": {"PUBSUB_EMULATOR_HOST": emulator_host},
            "agent": agent_fields(settings)},
        MONITOR: {"config": str(settings.monitor_config)},
        OVERVIEW: {"config": str(settings.monitor_config), "model": settings.model,
                   "html": str(settings.overview_html)},
    }


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def sandbox_prefect_document(base: dict[str, Any], settings: SandboxSettings, emulator_host: str, python: str,
                             site_packages: str) -> dict[str, Any]:
    """prefect.yaml (as a mapping) parameterized to the sandbox; `base` is left unchanged.

    Raises:
        ConfigError: a deployment the sandbox needs is missing from `base`.
    """
    document = copy.deepcopy(base)
    deployments = document.get("deployments") or []
    by_name = {deployment.get("name"): deployment for deployment in deployments if isinstance(deployment, dict)}
    missing = [name for name in REQUIRED if name not in by_name]
    if missing:
        raise ConfigError(f"prefect.yaml has no deployment {', '.join(missing)}",
                          "run the sandbox from the edgefleet checkout (its prefect.yaml lists them)")
    parameters = sandbox_parameters(settings, emulator_host, python, site_packages)
    schedules = {PROMOTE: settings.promote_every_s, OVERVIEW: settings.overview_every_s}
    for name, deployment in by_name.items():
        if name in parameters:
            current = (deployment.get("parameters") or {}).get("params") or {}
            deployment["parameters"] = {"params": _merge(current, parameters[name])}
        if name in schedules:
            deployment["schedules"] = [{"interval": schedules[name], "active": True}]
        # Each deployment its own copy of the pool (YAML aliases would share one), with the emulator's address.
        pool = copy.deepcopy(deployment.get("work_pool") or {})
        # One local worker: the sandbox has one identity (yours, on emulators), not the per-identity pools.
        pool["name"] = SANDBOX_WORK_POOL
        pool.setdefault("job_variables", {}).setdefault("env", {})["PUBSUB_EMULATOR_HOST"] = emulator_host
        deployment["work_pool"] = pool
    document.pop("definitions", None)  # its anchors are resolved into every deployment above
    return document
