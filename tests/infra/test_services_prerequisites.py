"""A first `pulumi up` on a fresh project: the program owns its prerequisites (run under Pulumi's mocks).

What a real first deployment needs and these tests assert: every API enabled by the program before anything
using it is created, the Pub/Sub service agent created before any grant to it, alert policies on new custom
metrics created only after their descriptors and a wait for the types to appear, no lookup that needs an API
before the program could enable it. A real `pulumi up` cannot run here (no Pulumi CLI, no provider plugins).
"""

from __future__ import annotations

import pytest

from edgefleet.infra.__main__ import build
from edgefleet.infra.names import API_OF_MODULE, API_SERVICE_USAGE, CORE_APIS
from edgefleet.infra.policy import ResourceRecord, check_metric_units, iam_bindings
from edgefleet.kernel.metrics import METRICS_BY_TYPE
from tests.infra.support.testing import PROJECT_NUMBER, StackRun, run_program, stack_config

PUBSUB_AGENT_EMAIL = f"service-{PROJECT_NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com"


@pytest.fixture(scope="module")
def bigquery_stack() -> StackRun:
    return run_program(lambda: build(stack_config(bigquery={"dataset": "fleet_analytics"})))


def _module(record: ResourceRecord) -> str:
    return record.type.split(":")[1].split("/")[0]


@pytest.fixture(params=["default_stack", "bigquery_stack"])
def stack(request: pytest.FixtureRequest) -> StackRun:
    """Each of the two stacks (without and with the BigQuery export), for checks that hold for both."""
    return request.getfixturevalue(request.param)


def _services(stack: StackRun) -> dict[str, ResourceRecord]:
    return {record.inputs["service"]: record for record in stack.of_type("Service")}


def test_every_api_a_resource_uses_is_enabled_and_never_disabled_on_destroy(stack: StackRun) -> None:
    services = _services(stack)
    used = {API_OF_MODULE[_module(record)] for record in stack.resources if record.type.startswith("gcp:")}
    assert used <= set(services), f"APIs used but not enabled: {sorted(used - set(services))}"
    assert set(CORE_APIS) <= set(services)
    assert API_SERVICE_USAGE not in services  # the one prerequisite: enabling goes through it
    for record in services.values():
        assert record.inputs["disableOnDestroy"] is False
        assert record.inputs.get("disableDependentServices") in (None, False)


def test_every_resource_waits_for_the_api_it_is_created_through(stack: StackRun) -> None:
    services = _services(stack)
    waiting = [
        record
        for record in stack.resources
        if record.type.startswith("gcp:") and _module(record) != "projects" or _short(record) == "IAMMember"
    ]
    assert len(waiting) > 20
    for record in waiting:
        api = API_OF_MODULE[_module(record)]
        assert stack.depends_on(record, services[api]), f"{record.name} does not wait for {api}"


def _sleep(stack: StackRun, name: str) -> ResourceRecord:
    [sleep] = [record for record in stack.of_type("Sleep") if record.name == f"edgefleet-{name}"]
    return sleep


def _short(record: ResourceRecord) -> str:
    return record.type.rsplit(":", 1)[-1]


def test_grants_to_the_pubsub_agent_wait_for_its_service_identity(stack: StackRun) -> None:
    [identity] = stack.of_type("ServiceIdentity")
    assert identity.inputs["service"] == "pubsub.googleapis.com"
    assert stack.depends_on(identity, _services(stack)["pubsub.googleapis.com"])
    agent_grants = [binding for binding in iam_bindings(stack.resources) if "gcp-sa-pubsub" in binding.member]
    assert len(agent_grants) >= 2  # dead-letter topic publisher, monitor subscription subscriber (+ BigQuery)
    for binding in agent_grants:
        assert binding.member == f"serviceAccount:{PUBSUB_AGENT_EMAIL}"
        assert stack.depends_on(binding.resource, identity), binding.resource.name


def test_no_lookup_needs_an_api_before_the_program_enables_it(default_stack: StackRun) -> None:
    # The project-number lookup (getProject) went through the Resource Manager API before any Service
    # resource could enable it; the service identity gives the agent's email instead.
    assert default_stack.invokes == []


def test_alert_policies_on_custom_metrics_wait_for_descriptors_and_their_propagation(
    default_stack: StackRun,
) -> None:
    sleep = _sleep(default_stack, "new-metric-types")
    descriptors = default_stack.of_type("MetricDescriptor")
    assert descriptors and all(default_stack.depends_on(sleep, descriptor) for descriptor in descriptors)
    assert sleep.inputs["createDuration"] == "120s"
    assert sleep.inputs["triggers"]["metricTypes"].split(",") == sorted(METRICS_BY_TYPE)
    custom = [
        record
        for record in default_stack.of_type("AlertPolicy")
        if "custom.googleapis.com/" in str(record.inputs["conditions"])
    ]
    assert len(custom) == 4  # device silent, latency p95, monitor stopped, drift (dead letters: a built-in metric)
    assert all(default_stack.depends_on(policy, sleep) for policy in custom)


def test_the_new_metric_wait_follows_the_stack_config() -> None:
    stack = run_program(lambda: build(stack_config(alerts={"newMetricWaitSeconds": 300})))
    sleep = _sleep(stack, "new-metric-types")
    assert sleep.inputs["createDuration"] == "300s"


def test_metric_units_are_in_cloud_monitorings_documented_list(default_stack: StackRun) -> None:
    assert check_metric_units(default_stack.resources) == []
    [temperature] = [
        record
        for record in default_stack.of_type("MetricDescriptor")
        if record.inputs["type"].endswith("/device/cpu_temperature")
    ]
    bad = temperature._replace(inputs={**temperature.inputs, "unit": "Cel"})
    [violation] = check_metric_units([bad])
    assert "'Cel'" in violation.message and "{Cel}" in violation.message


# --- the first `pulumi up` on a fresh project (issue 22, item 9) ----------------------------------------------


def test_every_api_is_enabled_after_resource_manager_which_the_provider_reads_each_one_through(
    stack: StackRun,
) -> None:
    services = _services(stack)
    resource_manager = services["cloudresourcemanager.googleapis.com"]
    others = [record for api, record in services.items() if api != "cloudresourcemanager.googleapis.com"]
    assert others and all(stack.depends_on(record, resource_manager) for record in others)
    assert not stack.depends_on(resource_manager, others[0])


def test_nothing_is_created_through_an_api_before_the_api_propagation_wait(stack: StackRun) -> None:
    wait = _sleep(stack, "api-propagation")
    services = _services(stack)
    assert all(stack.depends_on(wait, record) for record in services.values())
    assert wait.inputs["createDuration"] == "60s"
    assert wait.inputs["triggers"]["apis"].split(",") == sorted(services)
    users = [record for record in stack.resources
             if record.type.startswith("gcp:") and _short(record) not in ("Service",)]
    assert len(users) > 20
    late = [record.name for record in users if not stack.depends_on(record, wait)]
    assert late == []


def test_grants_to_the_new_service_accounts_wait_for_their_propagation(default_stack: StackRun) -> None:
    wait = _sleep(default_stack, "service-account-propagation")
    accounts = default_stack.of_type("Account")
    assert len(accounts) == 3 and all(default_stack.depends_on(wait, account) for account in accounts)
    assert wait.inputs["createDuration"] == "30s"
    fleet = {f"serviceAccount:{record.inputs['email']}" for record in accounts}
    grants = [binding for binding in iam_bindings(default_stack.resources) if binding.member in fleet]
    assert len(grants) >= 7
    assert all(default_stack.depends_on(binding.resource, wait) for binding in grants)
    [device_binding] = [record for record in default_stack.resources
                        if record.type == "gcp:serviceaccount/iAMMember:IAMMember"]
    assert default_stack.depends_on(device_binding, wait)  # the device pool acts as a new account too


def test_the_propagation_waits_follow_the_stack_config() -> None:
    stack = run_program(lambda: build(stack_config(propagation={"apiWaitSeconds": 180,
                                                                "serviceAccountWaitSeconds": 90})))
    assert _sleep(stack, "api-propagation").inputs["createDuration"] == "180s"
    assert _sleep(stack, "service-account-propagation").inputs["createDuration"] == "90s"


def test_x509_devices_enable_sts_and_iam_credentials_and_the_key_fallback_does_not(default_stack: StackRun) -> None:
    assert {"sts.googleapis.com", "iamcredentials.googleapis.com"} <= set(_services(default_stack))
    keys = run_program(lambda: build(stack_config(devices={"credentials": "key"})))
    assert not {"sts.googleapis.com", "iamcredentials.googleapis.com"} & set(_services(keys))
    assert keys.of_type("WorkloadIdentityPool") == [] and "device_workload_identity_provider" not in keys.outputs
