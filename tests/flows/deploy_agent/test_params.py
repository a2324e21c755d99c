"""deploy-agent parameters: the service manager as a discriminated union, old flat keys still read."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet.flows.deploy_agent.flow import DeployAgentParams
from edgefleet.flows.deploy_agent.service import ProcessService, SystemdService
from edgefleet.flows.rollout.params import load_yaml_params
from edgefleet.kernel.errors import ConfigError

REQUIRED = "inventory: fleet.yaml\npublic_key: release.pub\nagent: {model: shapes}\n"


def read(tmp_path: Path, text: str) -> DeployAgentParams:
    path = tmp_path / "deploy.yaml"
    path.write_text(REQUIRED + text)
    return load_yaml_params(DeployAgentParams, path)  # type: ignore[return-value]


def test_parameters_written_before_the_union_still_read(tmp_path: Path) -> None:
    params = read(tmp_path, "service_manager: process\nservice_name: agent-2\n")
    assert params.service == ProcessService(name="agent-2") and params.service_manager == "process"
    assert read(tmp_path, "service_manager: systemd\n").service == SystemdService()
    assert read(tmp_path, "").service == SystemdService()
    assert read(tmp_path, "service_name: agent-3\n").service == SystemdService(name="agent-3")


def test_the_service_section_picks_the_manager(tmp_path: Path) -> None:
    params = read(tmp_path, "service: {manager: systemd, restart_sec: 2}\n")
    assert params.service == SystemdService(restart_sec=2) and params.service_manager == "systemd"
    assert read(tmp_path, "service: {name: agent-4}\n").service == SystemdService(name="agent-4")


@pytest.mark.parametrize(("text", "named"), [
    ("service: {manager: process, restart_sec: 3}\n",
     "service.restart_sec is for service.manager systemd, not process: remove it, or set service.manager: systemd"),
    ("service: {manager: upstart}\n", "'systemd', 'process'"),
    ("service_manager: process\nservice: {manager: process}\n", "keep service alone"),
    ("service: {manager: process, name: 'bad name'}\n", "service.process.name"),
])
def test_a_wrong_combination_fails_at_load_naming_the_key_and_the_fix(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        read(tmp_path, text)
    assert named in caught.value.message and str(tmp_path / "deploy.yaml") in caught.value.message


@pytest.mark.parametrize("params", [
    {"service_manager": "process", "service_name": "agent-2"},  # a deployment's defaults from before the union
    {"service": {"manager": "process"}},
    {"service": {"manager": "systemd", "restart_sec": 2}},
])
def test_prefect_accepts_old_and_new_parameters_at_flow_run_creation(params: dict) -> None:
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools import validate

    from edgefleet.flows.deploy_agent.flow import deploy_agent

    schema = parameter_schema(deploy_agent.fn).model_dump_for_openapi()
    document = {"inventory": "fleet.yaml", "public_key": "release.pub", "agent": {"model": "shapes"}, **params}
    validate({"params": document}, schema, raise_on_error=True)  # what the Prefect server checks
    assert DeployAgentParams.model_validate(document).service.manager in ("systemd", "process")
