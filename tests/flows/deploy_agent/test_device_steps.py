"""deploy-agent's decisions (pure) and its step record: what a user reads when a device fails, and where."""

from __future__ import annotations

from pathlib import Path

from edgefleet.flows.deploy_agent.device_steps import agent_root_refusal, config_dir_refusal, wheel_is_there
from edgefleet.flows.deploy_agent.flow import DeployAgentParams, DeviceDeploy, deploy_device
from edgefleet.flows.fleet.inventory import DeviceSpec
from edgefleet.flows.fleet.parallel import job_parameter

SHA = "ab" * 32


def _device(**fields: object) -> DeviceSpec:
    return DeviceSpec.model_validate({"id": "cam-1", "host": "127.0.0.1", "key_file": "/nonexistent/key", **fields})


def test_a_home_relative_agent_root_is_refused_only_for_a_login_that_is_not_root() -> None:
    assert agent_root_refusal(_device(agent_root="~/agent")) is None
    refused = agent_root_refusal(_device(user="pi", agent_root="~/agent"))
    assert refused is not None and "must be absolute" in refused.message and "cam-1" in refused.message
    assert agent_root_refusal(_device(user="pi", agent_root="/var/lib/edgefleet-agent")) is None


def test_a_config_dir_inside_the_agent_root_is_refused_a_sibling_is_not() -> None:
    root = "/var/lib/agent"
    for inside in (root, f"{root}/etc", f"{root}/etc/cam-1"):
        refused = config_dir_refusal("cam-1", inside, root)
        assert refused is not None and "trust anchor" in refused.message
    assert config_dir_refusal("cam-1", "/var/lib/agent2/etc", root) is None  # a shared prefix is not inside
    assert config_dir_refusal("cam-1", "/opt/edgefleet/etc/cam-1", root) is None


def test_the_wheel_is_sent_unless_the_same_file_is_there() -> None:
    assert wheel_is_there(f"{SHA}  /opt/edgefleet/wheels/edgefleet-1.0-py3-none-any.whl\n", SHA)
    assert not wheel_is_there("", SHA)
    assert not wheel_is_there(f"{'cd' * 32}  /opt/edgefleet/wheels/edgefleet-1.0-py3-none-any.whl\n", SHA)


def test_a_device_that_cannot_be_reached_reads_as_a_failed_connect_step(tmp_path: Path) -> None:
    """No server: the login key is missing, so the first step fails; the result names it, nothing after it ran."""
    (tmp_path / "known_hosts").write_text("")
    params = DeployAgentParams(inventory="fleet.yaml", agent={"model": "shapes"}, public_key="release.pub")
    job = DeviceDeploy(_device(), tmp_path / "known_hosts", params, tmp_path / "edgefleet-1.0-py3-none-any.whl",
                       {"k.pub": "key"})
    result = deploy_device.fn(job)
    assert not result.ok and "key_file" in result.detail
    assert [(step.name, step.ok) for step in result.steps] == [("connect", False)]
    assert result.failed_step == "connect"
    assert "/nonexistent/key does not exist" in result.steps[0].detail


def test_the_deploy_task_takes_one_typed_job() -> None:
    assert job_parameter(deploy_device) == "job"
