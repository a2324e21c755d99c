"""prefect.yaml: the pull rollout (`edgefleet rollout pull`) as a Prefect deployment, `pull-rollout`, in the release
key's pool (edgefleet-pipeline, infra/pools.py), with PullRolloutParams as its run form; the sandbox points it at
its own registry and monitor."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from edgefleet.flows.rollout.pull_params import ExponentialRate, PullRolloutParams, ShareSchedule
from edgefleet.infra.pools import DEPLOYMENT_POOL, PIPELINE_POOL
from edgefleet.local.sandbox_deployments import PULL_ROLLOUT, SandboxSettings, sandbox_prefect_document

REPO = Path(__file__).resolve().parents[3]
NAME = PULL_ROLLOUT


def _document() -> dict:
    return yaml.safe_load((REPO / "prefect.yaml").read_text())


def _deployment(document: dict) -> dict:
    (deployment,) = [d for d in document["deployments"] if d["name"] == NAME]
    return deployment


def test_the_deployment_runs_the_pull_rollout_flow_in_the_release_keys_pool() -> None:
    from prefect.flows import load_flow_from_entrypoint

    deployment = _deployment(_document())
    assert load_flow_from_entrypoint(deployment["entrypoint"]).name == NAME
    assert deployment["work_pool"]["name"] == DEPLOYMENT_POOL[NAME] == PIPELINE_POOL
    assert deployment["schedules"] == []  # a rollout is started on purpose, never by a clock


def test_its_parameters_with_a_version_are_valid_pull_rollout_params() -> None:
    params = _deployment(_document())["parameters"]["params"]
    assert "version" not in params  # the one thing the run form must be given
    parsed = PullRolloutParams.model_validate(params | {"version": "1.2.0"})
    assert isinstance(parsed.schedule, ShareSchedule) and parsed.channel == "stable"


def test_the_run_form_is_the_pydantic_model_and_both_schedules_pass_prefects_check() -> None:
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools import validate

    from edgefleet.flows.rollout.pull_flow import pull_rollout

    schema = parameter_schema(pull_rollout.fn).model_dump_for_openapi()
    assert schema["required"] == ["params"]
    assert {"PullRolloutParams", "ShareSchedule", "ExponentialRate", "CanaryGate", "SigningParams"} <= set(
        schema["definitions"])
    base = _deployment(_document())["parameters"]["params"] | {"version": "1.2.0"}
    for schedule in (ShareSchedule(shares=("10%", "100%")), ExponentialRate(base_rate_per_minute=5)):
        validate({"params": base | {"schedule": schedule.model_dump(mode="json")}}, schema, raise_on_error=True)


def test_the_sandbox_points_it_at_its_registry_monitor_and_key(tmp_path: Path) -> None:
    settings = SandboxSettings(workdir=tmp_path, devices=2)
    document = sandbox_prefect_document(_document(), settings, "127.0.0.1:8681", sys.executable, "/site-packages")
    params = _deployment(document)["parameters"]["params"]
    parsed = PullRolloutParams.model_validate(params | {"version": "1.2.0"})
    assert (parsed.registry, parsed.monitor_config, parsed.model) == (
        str(settings.registry), str(settings.monitor_config), settings.model)
    assert parsed.public_key == f"{settings.signing_key}.pub"
    assert parsed.signing.dev_key_file == str(settings.signing_key)
