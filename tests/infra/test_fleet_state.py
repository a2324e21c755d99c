"""The optional Cloud SQL for PostgreSQL fleet state (issue 23 item 2): `fleetState: {engine: cloudsql, ...}` makes a
POSTGRES_15 instance with IAM database authentication, its database, the monitor's IAM login and its two Cloud SQL
roles conditioned on that instance; `edgefleet config from-stack` turns the outputs into the monitor's store.url.
Default off. Under Pulumi's mocks (the program's real resources and outputs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from edgefleet.cli import app
from edgefleet.infra.__main__ import build, main
from edgefleet.infra.cloud_check import Policies, check_identity_roles
from edgefleet.infra.names import API_SQLADMIN, cloudsql_instance_condition
from edgefleet.infra.outputs import StackOutputs
from edgefleet.infra.policy import check_all, iam_bindings
from edgefleet.kernel.errors import ConfigError
from edgefleet.kernel.findings import Status
from edgefleet.monitor.config import load_monitor_config
from edgefleet.monitor.store_engine import parse_store_url
from tests.infra.support.testing import PROJECT, StackRun, pulumi_config, run_program, stack_config

MONITOR = f"edgefleet-monitor@{PROJECT}.iam.gserviceaccount.com"
INSTANCE = "edgefleet-fleet-state"
CLOUDSQL_ROLES = {"roles/cloudsql.client", "roles/cloudsql.instanceUser"}


@pytest.fixture(scope="module")
def cloudsql_stack() -> StackRun:
    return run_program(lambda: build(stack_config(fleetState={"engine": "cloudsql", "tier": "db-g1-small"})))


def test_the_fleet_state_is_off_by_default(default_stack: StackRun) -> None:
    assert not [record for record in default_stack.resources if record.type.startswith("gcp:sql/")]
    assert not any(key.startswith("fleet_state") for key in default_stack.outputs)
    assert API_SQLADMIN not in {record.inputs.get("service") for record in default_stack.of_type("Service")}
    assert not {binding.role for binding in iam_bindings(default_stack.resources)} & CLOUDSQL_ROLES


def test_a_postgres_15_instance_with_iam_database_authentication_only(cloudsql_stack: StackRun) -> None:
    instance = cloudsql_stack.named("DatabaseInstance", INSTANCE)
    settings = instance.inputs["settings"]

    assert instance.inputs["databaseVersion"] == "POSTGRES_15" and instance.inputs["region"] == "us-central1"
    assert settings["tier"] == "db-g1-small" and settings["edition"] == "ENTERPRISE"
    assert {"name": "cloudsql.iam_authentication", "value": "on"} in settings["databaseFlags"]
    assert settings["ipConfiguration"] == {"ipv4Enabled": True, "sslMode": "TRUSTED_CLIENT_CERTIFICATE_REQUIRED"}
    assert "authorizedNetworks" not in settings["ipConfiguration"] and "rootPassword" not in instance.inputs
    assert instance.inputs["deletionProtection"] is True and instance.protect
    assert settings["backupConfiguration"] == {"enabled": True, "pointInTimeRecoveryEnabled": True}
    assert API_SQLADMIN in {record.inputs.get("service") for record in cloudsql_stack.of_type("Service")}


def test_the_monitor_logs_in_as_itself_to_its_database(cloudsql_stack: StackRun) -> None:
    [database] = cloudsql_stack.of_type("Database")
    [user] = cloudsql_stack.of_type("User")

    assert (database.inputs["instance"], database.inputs["name"]) == (INSTANCE, "edgefleet")
    assert user.inputs["instance"] == INSTANCE and user.inputs["type"] == "CLOUD_IAM_SERVICE_ACCOUNT"
    assert user.inputs["name"] == f"edgefleet-monitor@{PROJECT}.iam" and "password" not in user.inputs
    outputs = cloudsql_stack.outputs
    assert outputs["fleet_state_connection_name"] == f"{PROJECT}:us-central1:{INSTANCE}"
    assert (outputs["fleet_state_database"], outputs["fleet_state_user"]) == ("edgefleet", user.inputs["name"])


def test_the_monitors_cloudsql_roles_are_conditioned_on_the_instance(cloudsql_stack: StackRun) -> None:
    granted = [binding for binding in iam_bindings(cloudsql_stack.resources) if binding.role in CLOUDSQL_ROLES]

    assert {binding.role for binding in granted} == CLOUDSQL_ROLES
    assert {binding.member for binding in granted} == {f"serviceAccount:{MONITOR}"}
    for binding in granted:
        assert binding.resource.inputs["condition"]["expression"] == cloudsql_instance_condition(PROJECT, INSTANCE)
    assert check_all(cloudsql_stack.resources) == []


def test_an_unconditioned_cloudsql_role_on_the_project_is_a_policy_violation(cloudsql_stack: StackRun) -> None:
    from edgefleet.infra.policy import check_project_roles

    [client] = [record for record in cloudsql_stack.of_type("IAMMember")
                if record.inputs.get("role") == "roles/cloudsql.client"]
    bare = client._replace(inputs={key: value for key, value in client.inputs.items() if key != "condition"})
    [violation] = check_project_roles([bare])
    assert "roles/cloudsql.client on the whole project" in violation.message


def test_a_private_instance_needs_its_network() -> None:
    with pytest.raises(ConfigError) as refused:
        stack_config(fleetState={"engine": "cloudsql", "network": "private"})
    assert "edgefleet:fleetState" in refused.value.message and "privateNetwork" in refused.value.fix

    network = f"projects/{PROJECT}/global/networks/fleet-vpc"
    stack = run_program(lambda: build(stack_config(fleetState={"engine": "cloudsql", "network": "private",
                                                               "privateNetwork": network})))
    ip = stack.named("DatabaseInstance", INSTANCE).inputs["settings"]["ipConfiguration"]
    assert ip["ipv4Enabled"] is False and ip["privateNetwork"] == network
    assert stack.outputs["fleet_state_private_ip"] is True


@pytest.mark.parametrize("fleet_state", [
    {"tier": "db-f1-micro"},  # no engine
    {"engine": "alloydb"},
    {"engine": "cloudsql", "tier": "f1 micro"},
    {"engine": "cloudsql", "database": "Fleet-State"},
    {"engine": "cloudsql", "tire": "db-f1-micro"},
])
def test_a_wrong_fleet_state_config_is_named(fleet_state: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="edgefleet:fleetState"):
        stack_config(fleetState=fleet_state)


def test_from_stack_writes_the_monitors_store_url_and_the_proxy_command(tmp_path: Path) -> None:
    outputs = run_program(main, config=pulumi_config(**{"edgefleet:fleetState": json.dumps({"engine": "cloudsql"})}
                                                     )).outputs
    (tmp_path / "outputs.json").write_text(json.dumps(outputs))
    result = CliRunner().invoke(app, ["config", "from-stack", str(tmp_path / "outputs.json"),
                                      "--out-dir", str(tmp_path / "config")])
    assert result.exit_code == 0, result.output

    monitor = load_monitor_config(tmp_path / "config" / "pipeline.yaml")
    assert monitor.store.url == f"postgresql://edgefleet-monitor%40{PROJECT}.iam@127.0.0.1:5432/edgefleet" \
        "?sslmode=disable"
    assert parse_store_url(monitor.store.url).engine == "postgresql"
    pipeline = yaml.safe_load((tmp_path / "config" / "pipeline.yaml").read_text())
    assert pipeline["fleet_state"]["proxy"] == (f"cloud-sql-proxy --auto-iam-authn --address 127.0.0.1 --port 5432 "
                                                f"{PROJECT}:us-central1:{INSTANCE}")


def test_from_stack_without_a_fleet_state_leaves_the_monitor_on_sqlite(tmp_path: Path) -> None:
    outputs = run_program(main, config=pulumi_config()).outputs
    (tmp_path / "outputs.json").write_text(json.dumps(outputs))
    result = CliRunner().invoke(app, ["config", "from-stack", str(tmp_path / "outputs.json"),
                                      "--out-dir", str(tmp_path / "config")])
    assert result.exit_code == 0, result.output
    assert load_monitor_config(tmp_path / "config" / "pipeline.yaml").store.url is None
    assert "fleet_state" not in yaml.safe_load((tmp_path / "config" / "pipeline.yaml").read_text())


def _policies(stack: StackRun, outputs: StackOutputs, *, drop_condition: bool = False) -> Policies:
    """The IAM policies as Google returns them for what `stack` grants (a conditional binding keyed by its
    condition, as `role_members` reads it)."""
    from edgefleet.infra.cloud_check import conditioned_role

    targets = {"pubsub/topicIAMMember": "telemetry_topic", "pubsub/subscriptionIAMMember": "monitor_subscription",
               "storage/bucketIAMMember": "registry_bucket", "projects/iAMMember": "project"}
    found: dict[str, dict[str, set[str]]] = {target: {} for target in targets.values()}
    for binding in iam_bindings(stack.resources):
        if binding.scope not in targets:
            continue
        condition = binding.resource.inputs.get("condition")
        expression = None if drop_condition or not condition else condition["expression"]
        found[targets[binding.scope]].setdefault(conditioned_role(binding.role, expression), set()).add(
            binding.member)
    return Policies(**{target: {role: frozenset(m) for role, m in roles.items()} for target, roles in found.items()})


def test_cloud_check_expects_the_conditioned_cloudsql_roles_exactly_when_the_stack_has_a_fleet_state(
        cloudsql_stack: StackRun) -> None:
    outputs = StackOutputs.model_validate(cloudsql_stack.outputs)
    findings = check_identity_roles(_policies(cloudsql_stack, outputs), outputs)
    assert all(result.status is Status.OK for result in findings)

    *_, monitor = check_identity_roles(_policies(cloudsql_stack, outputs, drop_condition=True), outputs)
    assert monitor.status is Status.FAIL and "extra roles/cloudsql.client on the project" in monitor.detail
    without = StackOutputs.model_validate({key: value for key, value in cloudsql_stack.outputs.items()
                                           if not key.startswith("fleet_state")})
    *_, monitor = check_identity_roles(_policies(cloudsql_stack, outputs), without)
    assert monitor.status is Status.FAIL and "extra roles/cloudsql.instanceUser if" in monitor.detail


def test_the_example_stacks_commented_fleet_state_is_a_valid_config() -> None:
    """Pulumi.dev.yaml shows the opt-in block commented out: uncommented, it is a valid fleetState."""
    lines = (Path(__file__).resolve().parents[2] / "Pulumi.dev.yaml").read_text().splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith("  # edgefleet:fleetState:"))
    block = []
    for line in lines[start + 1:]:
        if not line.startswith("  #   "):
            break
        block.append(line.removeprefix("  #   "))  # a commented-out field stays a YAML comment
    example = yaml.safe_load("\n".join(block))
    assert example["engine"] == "cloudsql"
    config = stack_config(fleetState=example).fleet_state
    assert config is not None and config.tier == "db-f1-micro" and config.network == "public"
