"""`make sandbox`'s pure parts: the project's deployments parameterized to the sandbox (each deployment's
parameters valid for its flow), and `sandbox-down` cleaning up after a sandbox that was killed.

The whole sandbox, started for real and driven from a browser, is tested in tests/e2e/test_sandbox_ui.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edgefleet.kernel.errors import ConfigError
from edgefleet.local.processes import wait_until
from edgefleet.local.sandbox import down
from edgefleet.local.sandbox_deployments import (
    DEPLOY_AGENT,
    OVERVIEW,
    PROMOTE,
    RELEASE,
    ROLLOUT,
    SandboxSettings,
    sandbox_prefect_document,
)

REPO = Path(__file__).resolve().parents[2]
EMULATOR = "127.0.0.1:8681"


def _document(settings: SandboxSettings) -> dict:
    base = yaml.safe_load((REPO / "prefect.yaml").read_text())
    return sandbox_prefect_document(base, settings, EMULATOR, sys.executable, "/site-packages")


def _params(document: dict) -> dict[str, dict]:
    return {deployment["name"]: deployment["parameters"]["params"] for deployment in document["deployments"]}


def test_every_deployment_points_at_the_sandbox_and_validates(tmp_path: Path) -> None:
    from edgefleet.flows.deploy_agent.flow import DeployAgentParams
    from edgefleet.flows.monitor.overview import FleetOverviewParams
    from edgefleet.flows.release.params import ReleaseParams
    from edgefleet.flows.rollout.params import PromotionParams, RolloutParams

    settings = SandboxSettings(workdir=tmp_path, devices=2)
    params = _params(_document(settings))
    release = ReleaseParams.model_validate(params[RELEASE])
    assert release.registry == str(settings.registry) and release.channel == "canary"
    rollout = RolloutParams.model_validate(params[ROLLOUT])
    assert (rollout.inventory, rollout.monitor_config) == (str(settings.inventory), str(settings.monitor_config))
    assert rollout.version is None and rollout.channel == "canary"  # rolls out what release-model published
    assert rollout.public_key == f"{settings.signing_key}.pub"  # and verifies the pointer it follows
    promote = PromotionParams.model_validate(params[PROMOTE])
    assert promote.healthy_for_s == settings.healthy_for_s
    agent = DeployAgentParams.model_validate(params[DEPLOY_AGENT])
    assert agent.service_manager == "process" and agent.public_key == f"{settings.signing_key}.pub"
    assert agent.environment == {"PUBSUB_EMULATOR_HOST": EMULATOR} and agent.no_deps
    assert agent.registry == str(settings.registry)  # registers each device's key: the monitor checks signatures
    assert agent.enrolment.dev_key_file == str(settings.enrolment_key)  # signs those key records
    assert FleetOverviewParams.model_validate(params[OVERVIEW]).html == str(settings.overview_html)


def test_schedules_are_minutes_and_the_pool_knows_the_emulator(tmp_path: Path) -> None:
    settings = SandboxSettings(workdir=tmp_path, promote_every_s=180, healthy_for_s=90)
    document = _document(settings)
    by_name = {deployment["name"]: deployment for deployment in document["deployments"]}
    assert by_name[PROMOTE]["schedules"] == [{"interval": 180, "active": True}]
    assert by_name[PROMOTE]["parameters"]["params"]["healthy_for_s"] == 90
    assert by_name[RELEASE]["schedules"] == []
    for deployment in by_name.values():
        assert deployment["work_pool"]["job_variables"]["env"]["PUBSUB_EMULATOR_HOST"] == EMULATOR
        assert deployment["work_pool"]["name"] == "edgefleet-process"
    # The project's own parameters stay where the sandbox has nothing to say.
    assert by_name[RELEASE]["parameters"]["params"]["dataset"] == {"source": "demo"}
    assert "definitions" not in document


def test_the_project_file_is_left_as_it_was(tmp_path: Path) -> None:
    base = yaml.safe_load((REPO / "prefect.yaml").read_text())
    before = json.dumps(base, sort_keys=True, default=str)
    sandbox_prefect_document(base, SandboxSettings(workdir=tmp_path), EMULATOR, sys.executable, "/x")
    assert json.dumps(base, sort_keys=True, default=str) == before


def test_a_prefect_yaml_without_the_needed_deployments_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        sandbox_prefect_document({"deployments": [{"name": RELEASE}]}, SandboxSettings(workdir=tmp_path),
                                 EMULATOR, sys.executable, "/x")
    assert ROLLOUT in caught.value.message and "edgefleet checkout" in caught.value.fix


def test_down_after_a_crash_kills_the_recorded_processes_and_nothing_else(tmp_path: Path) -> None:
    """The sandbox's main process is gone (killed): `down` still stops the sshd it recorded, and leaves alone
    a process that merely has a recorded pid file's number but is not what was recorded."""
    # A stand-in "sshd": a process whose command line names sshd (exec -a), as a leftover device would.
    leftover = subprocess.Popen(["bash", "-c", "exec -a sshd-sandbox-test sleep 300"])
    bystander = subprocess.Popen(["sleep", "300"])
    cmdline = Path(f"/proc/{leftover.pid}/cmdline")
    # Past bash's exec (while the kernel swaps the image, the command line reads empty).
    assert wait_until(lambda: cmdline.read_bytes().startswith(b"sshd-sandbox-test"), timeout_s=60, interval_s=0.02)
    try:
        agent_pid = tmp_path / "edgefleet-agent.pid"
        agent_pid.write_text(str(bystander.pid))  # not an agent: must survive
        (tmp_path / "sandbox.json").write_text(json.dumps({
            "pid": 2**22 + 1, "groups": {}, "pids": {"sshd-sim-1": leftover.pid},
            "agent_pid_files": [str(agent_pid)]}))
        killed = down(tmp_path, wait_s=1.0)
        assert killed == ["sshd-sim-1"]
        assert leftover.wait(timeout=10) == -signal.SIGKILL
        assert bystander.poll() is None
        assert not (tmp_path / "sandbox.json").exists()
        assert down(tmp_path) == []  # nothing recorded: nothing to do
    finally:
        for process in (leftover, bystander):
            process.kill()
            process.wait()


def test_a_dead_device_sshd_is_named_by_the_watch(tmp_path: Path) -> None:
    """A part that dies (here a device's sshd) is named, so the sandbox can say so and stop the rest (the sandbox's
    watch is its local stack's: `LocalStack.check_alive`)."""
    from edgefleet.kernel.errors import EdgefleetError
    from edgefleet.local.fleet import SimulatedFleet
    from edgefleet.local.stack import check_alive

    fleet = SimulatedFleet(tmp_path / "fleet", 2)
    fleet.start()
    try:
        check_alive(None, fleet, None)  # all up: nothing to say
        sshd = fleet.devices["sim-2"].sshd
        assert sshd is not None and sshd.pid is not None and sshd.popen is not None
        os.kill(sshd.pid, signal.SIGKILL)  # it crashes
        sshd.popen.wait()
        with pytest.raises(EdgefleetError) as caught:
            check_alive(None, fleet, None)
        assert "sim-2" in caught.value.message and "sshd.log" in caught.value.fix
    finally:
        fleet.stop()
    assert all(device.sshd is None for device in fleet.devices.values())


def test_the_sandbox_stack_writes_where_its_deployments_read(tmp_path: Path) -> None:
    """The local stack writes the registry, keys, monitor config, fleet state and inventory where the sandbox's
    deployments (parameterized from SandboxSettings) read them."""
    from edgefleet.local.sandbox import stack_spec

    settings = SandboxSettings(workdir=tmp_path)
    spec = stack_spec(settings, pubsub_port=8681)
    assert (spec.registry_dir, spec.release_key, spec.enrolment_key, spec.monitor_config_path, spec.store_path,
            spec.fleet_dir / "fleet.yaml", spec.prefect_home) == (
        settings.registry, settings.signing_key, settings.enrolment_key, settings.monitor_config,
        settings.store_path, settings.inventory, settings.prefect_home)
    assert spec.prefect is not None and spec.prefect.prefect_file == settings.prefect_yaml
    assert spec.fleet is not None and spec.fleet.agent is None  # deploy-agent installs the agents
    assert not spec.monitor.in_process  # the fleet-monitor deployment runs it
