"""One Prefect work pool per Google identity, and scheduled deployments shipped off (issue 22, items 4 and 10).

Before: every deployment ran in `edgefleet-process` with one ADC identity, so the least-privilege service
accounts could not all be used; and `promote-canary`/`resign-channels` were scheduled from the first
`prefect deploy`, acting on the placeholder registry `~/.edgefleet/registry`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from edgefleet.cli import app
from edgefleet.infra.__main__ import main
from edgefleet.infra.pools import DEPLOYMENT_IDENTITY, WORK_POOLS, adc_file
from edgefleet.infra.testing import pulumi_config, run_program

REPO = Path(__file__).resolve().parents[2]
SCHEDULED_ON_PLACEHOLDERS = ("promote-canary", "resign-channels")


def _deployments() -> dict[str, dict]:
    document = yaml.safe_load((REPO / "prefect.yaml").read_text())
    return {deployment["name"]: deployment for deployment in document["deployments"]}


def test_every_deployment_runs_in_the_pool_of_the_identity_its_code_needs() -> None:
    deployments = _deployments()
    assert set(deployments) == set(DEPLOYMENT_IDENTITY)
    for name, deployment in deployments.items():
        assert deployment["work_pool"]["name"] == WORK_POOLS[DEPLOYMENT_IDENTITY[name]], name
    pools = {deployment["work_pool"]["name"] for deployment in deployments.values()}
    assert pools == {"edgefleet-pipeline", "edgefleet-monitor"}  # not one pool (one identity) for all


def test_the_monitor_pool_runs_no_flow_that_writes_the_registry() -> None:
    monitor_pool = {name for name, deployment in _deployments().items()
                    if deployment["work_pool"]["name"] == WORK_POOLS["monitor"]}
    assert monitor_pool == {"fleet-monitor", "fleet-overview"}


@pytest.mark.parametrize("name", SCHEDULED_ON_PLACEHOLDERS)
def test_a_schedule_acting_on_the_placeholder_registry_ships_inactive(name: str) -> None:
    deployment = _deployments()[name]
    assert deployment["parameters"]["params"]["registry"] == "~/.edgefleet/registry"  # the placeholder
    assert deployment["schedules"], "the schedule is still there, to turn on once configured"
    assert all(schedule["active"] is False for schedule in deployment["schedules"])


def test_no_deployment_is_scheduled_on_from_the_first_deploy() -> None:
    active = [name for name, deployment in _deployments().items()
              for schedule in deployment.get("schedules") or [] if schedule.get("active", True)]
    assert active == []


def test_from_stack_writes_each_pool_with_its_service_account_and_worker_command(tmp_path: Path) -> None:
    outputs = run_program(main, config=pulumi_config()).outputs
    outputs_file = tmp_path / "outputs.json"
    outputs_file.write_text(json.dumps(outputs))
    result = CliRunner().invoke(app, ["config", "from-stack", str(outputs_file), "--out-dir", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    pools = yaml.safe_load((tmp_path / "c" / "work-pools.yaml").read_text())["work_pools"]
    assert set(pools) == set(WORK_POOLS.values())
    for identity, pool in WORK_POOLS.items():
        entry = pools[pool]
        email = outputs[f"{identity}_service_account"]
        assert (entry["identity"], entry["service_account"]) == (identity, email)
        assert entry["deployments"] == sorted(name for name, who in DEPLOYMENT_IDENTITY.items() if who == identity)
        assert f"--impersonate-service-account {email}" in "\n".join(entry["setup"])
        assert entry["setup"][-1] == f"GOOGLE_APPLICATION_CREDENTIALS={adc_file(identity)} prefect worker start " \
            f"--pool {pool}"
    pipeline = yaml.safe_load((tmp_path / "c" / "pipeline.yaml").read_text())
    assert pipeline["device_workload_identity_provider"] == outputs["device_workload_identity_provider"]
