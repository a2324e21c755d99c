"""One Prefect work pool per Google identity, and scheduled deployments shipped off (issue 22, items 4 and 10).

Before: every deployment ran in `edgefleet-process` with one ADC identity, so the least-privilege service
accounts could not all be used; and `promote-canary`/`resign-channels` were scheduled from the first
`prefect deploy`, acting on the placeholder registry `~/.edgefleet/registry`. Then deploy-agent (the fleet
enrolment key) shared `edgefleet-pipeline` with the release key's flows: one worker held both keys.
"""

from __future__ import annotations

import importlib
import json
import typing
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from edgefleet.cli import app
from edgefleet.flows.trust.device_key_records import EnrolmentKeyParams
from edgefleet.flows.trust.signing_params import SigningParams
from edgefleet.infra.__main__ import main
from edgefleet.infra.pools import DEPLOYMENT_IDENTITY, DEPLOYMENT_POOL, POOL_IDENTITY, adc_file
from tests.infra.support.testing import pulumi_config, run_program

REPO = Path(__file__).resolve().parents[2]
SCHEDULED_ON_PLACEHOLDERS = ("promote-canary", "resign-channels")


def _deployments() -> dict[str, dict]:
    document = yaml.safe_load((REPO / "prefect.yaml").read_text())
    return {deployment["name"]: deployment for deployment in document["deployments"]}


def test_every_deployment_runs_in_the_pool_of_the_identity_its_code_needs() -> None:
    deployments = _deployments()
    assert set(deployments) == set(DEPLOYMENT_IDENTITY) == set(DEPLOYMENT_POOL)
    for name, deployment in deployments.items():
        assert deployment["work_pool"]["name"] == DEPLOYMENT_POOL[name], name
        assert POOL_IDENTITY[DEPLOYMENT_POOL[name]] == DEPLOYMENT_IDENTITY[name], name
    pools = {deployment["work_pool"]["name"] for deployment in deployments.values()}
    assert pools == {"edgefleet-pipeline", "edgefleet-enrol", "edgefleet-monitor"}  # not one pool for all
    assert set(POOL_IDENTITY.values()) == {"pipeline", "monitor"}  # and each identity has its pool(s)


def test_the_monitor_pool_runs_no_flow_that_writes_the_registry() -> None:
    monitor_pools = {pool for pool, identity in POOL_IDENTITY.items() if identity == "monitor"}
    monitor_flows = {name for name, deployment in _deployments().items()
                     if deployment["work_pool"]["name"] in monitor_pools}
    assert monitor_flows == {"fleet-monitor", "fleet-overview"}


def _key_parameters(model: type, seen: frozenset[type] = frozenset()) -> set[type]:
    """The signing-key parameter models (release key, enrolment key) found anywhere in a parameter model."""
    found: set[type] = set()
    for field in getattr(model, "model_fields", {}).values():
        for kind in (field.annotation, *typing.get_args(field.annotation)):
            if kind in (SigningParams, EnrolmentKeyParams):
                found.add(kind)
            elif isinstance(kind, type) and hasattr(kind, "model_fields") and kind not in seen:
                found |= _key_parameters(kind, seen | {model})
    return found


def _keys_read_by(entrypoint: str) -> set[type]:
    module, _, name = entrypoint.rpartition(".")
    flow = getattr(importlib.import_module(module), name)
    hints = typing.get_type_hints(flow.fn)
    return set().union(*(_key_parameters(kind) for key, kind in hints.items() if key != "return"))


def test_the_release_key_and_the_enrolment_key_never_share_a_work_pool() -> None:
    """README trust model: the release key is readable only by the release and rollout pool, the fleet enrolment
    key by the deploy-agent pool only. A pool whose flows read both gives one worker both keys."""
    keys_per_pool: dict[str, set[type]] = {}
    for deployment in _deployments().values():
        keys = _keys_read_by(deployment["entrypoint"])
        keys_per_pool.setdefault(deployment["work_pool"]["name"], set()).update(keys)
    assert SigningParams in keys_per_pool["edgefleet-pipeline"]  # the walk finds the keys at all
    shared = {pool: keys for pool, keys in keys_per_pool.items() if keys == {SigningParams, EnrolmentKeyParams}}
    assert shared == {}, f"pools whose worker reads both the release and the enrolment key: {shared}"
    enrol_pools = {pool for pool, keys in keys_per_pool.items() if EnrolmentKeyParams in keys}
    assert enrol_pools == {"edgefleet-enrol"}


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
    assert set(pools) == set(POOL_IDENTITY) == {"edgefleet-pipeline", "edgefleet-enrol", "edgefleet-monitor"}
    assert pools["edgefleet-enrol"]["deployments"] == ["deploy-agent"]
    assert "deploy-agent" not in pools["edgefleet-pipeline"]["deployments"]
    for pool, identity in POOL_IDENTITY.items():
        entry = pools[pool]
        email = outputs[f"{identity}_service_account"]
        assert (entry["identity"], entry["service_account"]) == (identity, email)
        assert entry["deployments"] == sorted(name for name, where in DEPLOYMENT_POOL.items() if where == pool)
        assert f"--impersonate-service-account {email}" in "\n".join(entry["setup"])
        assert entry["setup"][-1] == f"GOOGLE_APPLICATION_CREDENTIALS={adc_file(identity)} prefect worker start " \
            f"--pool {pool}"
    pipeline = yaml.safe_load((tmp_path / "c" / "pipeline.yaml").read_text())
    assert pipeline["device_workload_identity_provider"] == outputs["device_workload_identity_provider"]
