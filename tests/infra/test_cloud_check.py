"""`edgefleet cloud check`: each check says ok on a project as `pulumi up` leaves it, and names what is wrong
and what to run otherwise.

Where the official Pub/Sub emulator implements the call (topics with schemas, ValidateMessage, subscriptions),
the check runs against it with the real clients. Everything else (Service Usage, IAM policies, bucket
metadata, metric descriptors) has no emulator: those checks are unit-tested against RESPONSES BUILT FROM THE
CLIENT LIBRARIES' OWN TYPES and Google's documented resource examples, not recorded from a real project. A test
against a real project runs only when EDGEFLEET_CLOUD_CHECK_OUTPUTS names a `pulumi stack output --json` file
and credentials are available.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from google.api import metric_pb2
from google.api_core import exceptions as google_exceptions
from google.cloud import pubsub_v1, service_usage_v1, storage
from google.iam.v1 import policy_pb2
from google.pubsub_v1.types import Encoding, Schema
from typer.testing import CliRunner

from edgefleet.cli import app
from edgefleet.infra.cloud_check import (
    CloudClients,
    Policies,
    check_apis,
    check_bucket,
    check_dead_letter,
    check_identity_roles,
    check_metric_descriptors,
    check_prerequisites,
    check_topic_schema,
    expected_apis,
    expected_role,
    role_members,
    run_checks,
    sample_telemetry,
)
from edgefleet.infra.names import CORE_APIS, FLEET_GRANTS, PREREQUISITE_APIS, X509_APIS
from edgefleet.infra.outputs import StackOutputs
from edgefleet.kernel.contracts import layout
from edgefleet.kernel.contracts.telemetry import telemetry_avro_schema
from edgefleet.kernel.findings import Status, parse_findings
from edgefleet.kernel.metrics import METRICS_BY_TYPE
from edgefleet.local.emulators import PubSubEmulator
from tests.infra.support.testing import PROJECT, PROJECT_NUMBER

PUBSUB_AGENT = f"serviceAccount:service-{PROJECT_NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com"
OUTPUTS = StackOutputs(
    project=PROJECT,
    region="us-central1",
    telemetry_topic=layout.TELEMETRY_TOPIC,
    telemetry_topic_id=f"projects/{PROJECT}/topics/{layout.TELEMETRY_TOPIC}",
    telemetry_schema_id=f"projects/{PROJECT}/schemas/{layout.TELEMETRY_SCHEMA}",
    telemetry_schema_enforced=True,
    monitor_subscription=layout.MONITOR_SUBSCRIPTION,
    dead_letter_topic=layout.TELEMETRY_DEAD_LETTER_TOPIC,
    dead_letter_subscription=layout.DEAD_LETTER_SUBSCRIPTION,
    registry_bucket=f"{PROJECT}-edgefleet-registry",
    registry_uri=f"gs://{PROJECT}-edgefleet-registry",
    device_service_account=f"edgefleet-device@{PROJECT}.iam.gserviceaccount.com",
    pipeline_service_account=f"edgefleet-pipeline@{PROJECT}.iam.gserviceaccount.com",
    monitor_service_account=f"edgefleet-monitor@{PROJECT}.iam.gserviceaccount.com",
    dashboard_id=f"projects/{PROJECT_NUMBER}/dashboards/d",
)


# --- against the Pub/Sub emulator (real clients) -------------------------------------------------------------


@pytest.fixture
def emulated_topic(pubsub_emulator_private: PubSubEmulator,
                   monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator_private.host)
    schemas, publisher = pubsub_v1.SchemaServiceClient(), pubsub_v1.PublisherClient()

    def deploy(definition: dict[str, Any]) -> None:
        schema = schemas.create_schema(request={
            "parent": f"projects/{PROJECT}", "schema_id": layout.TELEMETRY_SCHEMA,
            "schema": Schema(type_=Schema.Type.AVRO, definition=json.dumps(definition))})
        publisher.create_topic(request={"name": OUTPUTS.telemetry_topic_id,
                                        "schema_settings": {"schema": schema.name, "encoding": Encoding.JSON}})

    yield SimpleNamespace(deploy=deploy, schemas=schemas, publisher=publisher)
    publisher.transport.close()


def test_the_topic_schema_accepts_this_agents_telemetry(emulated_topic: SimpleNamespace) -> None:
    emulated_topic.deploy(telemetry_avro_schema())
    result = check_topic_schema(emulated_topic.publisher, emulated_topic.schemas, OUTPUTS, sample_telemetry())
    assert result.status is Status.OK, result


def test_a_topic_schema_of_another_revision_is_reported(emulated_topic: SimpleNamespace) -> None:
    other = telemetry_avro_schema()
    other["fields"] = [*other["fields"], {"name": "signature", "type": "string"}]  # required, the agent lacks it
    emulated_topic.deploy(other)
    result = check_topic_schema(emulated_topic.publisher, emulated_topic.schemas, OUTPUTS, sample_telemetry())
    assert result.status is Status.FAIL
    assert "refuses this agent's telemetry" in result.detail and "pulumi up" in result.fix


def test_a_missing_topic_is_reported_with_pulumi_up(emulated_topic: SimpleNamespace) -> None:
    result = check_topic_schema(emulated_topic.publisher, emulated_topic.schemas, OUTPUTS, sample_telemetry())
    assert (result.status, result.fix) == (Status.FAIL, "pulumi up (in the repo root)")
    assert "does not exist" in result.detail


# --- responses built from the client types (no emulator for these APIs) ---------------------------------------


class ServiceUsage:
    """Answers batch_get_services with `service_usage_v1` types (as the API does, names carry the number)."""

    def __init__(self, enabled: set[str]) -> None:
        self.enabled = enabled

    def batch_get_services(self, request: dict[str, Any]) -> service_usage_v1.BatchGetServicesResponse:
        State = service_usage_v1.State  # noqa: N806
        return service_usage_v1.BatchGetServicesResponse(services=[
            service_usage_v1.Service(name=f"projects/{PROJECT_NUMBER}/services/{name.rsplit('/', 1)[-1]}",
                                     parent=f"projects/{PROJECT_NUMBER}",
                                     state=State.ENABLED if name.rsplit("/", 1)[-1] in self.enabled
                                     else State.DISABLED)
            for name in request["names"]])


def test_apis_enabled_and_disabled() -> None:
    assert check_apis(ServiceUsage(set(CORE_APIS)), PROJECT, bigquery=False).status is Status.OK
    result = check_apis(ServiceUsage(set(CORE_APIS) - {"monitoring.googleapis.com"}), PROJECT, bigquery=False)
    assert result.status is Status.FAIL
    assert "monitoring.googleapis.com" in result.detail
    assert f"gcloud services enable monitoring.googleapis.com --project {PROJECT}" in result.fix
    assert check_apis(ServiceUsage(set(CORE_APIS)), PROJECT, bigquery=True).status is Status.FAIL


# The bucket resource as Google documents it (storage/docs/json_api/v1/buckets#resource), as `pulumi up` sets it.
BUCKET_RESOURCE = {
    "kind": "storage#bucket",
    "name": OUTPUTS.registry_bucket,
    "location": "US-CENTRAL1",
    "versioning": {"enabled": True},
    "iamConfiguration": {
        "uniformBucketLevelAccess": {"enabled": True, "lockedTime": "2026-04-01T00:00:00Z"},
        "publicAccessPrevention": "enforced",
    },
    "lifecycle": {"rule": [
        {"action": {"type": "Delete"}, "condition": {"daysSinceNoncurrentTime": 30, "isLive": False}},
        {"action": {"type": "Delete"}, "condition": {"numNewerVersions": 5, "isLive": False}},
    ]},
}


class StorageClient:
    def __init__(self, resource: dict[str, Any] | None) -> None:
        self.resource = resource
        self.client = storage.Client(project=PROJECT, credentials=_anonymous())

    def get_bucket(self, name: str) -> storage.Bucket:
        if self.resource is None:
            raise google_exceptions.NotFound(f"bucket {name} not found")
        bucket = storage.Bucket(self.client, name)
        bucket._set_properties(self.resource)  # what Client.get_bucket does with the API's answer
        return bucket


def _anonymous() -> Any:
    from google.auth.credentials import AnonymousCredentials

    return AnonymousCredentials()


def test_a_hardened_bucket_passes_and_each_weakness_is_named() -> None:
    assert check_bucket(StorageClient(BUCKET_RESOURCE), OUTPUTS.registry_bucket).status is Status.OK
    weak = {**BUCKET_RESOURCE, "versioning": {"enabled": False}, "lifecycle": {"rule": []},
            "iamConfiguration": {"uniformBucketLevelAccess": {"enabled": False},
                                 "publicAccessPrevention": "inherited"}}
    result = check_bucket(StorageClient(weak), OUTPUTS.registry_bucket)
    assert result.status is Status.FAIL
    for problem in ("uniform bucket-level access is off", "public access prevention is 'inherited'",
                    "versioning is off", "no lifecycle rule deletes noncurrent versions"):
        assert problem in result.detail
    assert check_bucket(StorageClient(None), OUTPUTS.registry_bucket).status is Status.FAIL


def _grants_as_policies(extra: dict[str, dict[str, set[str]]] | None = None, drop: tuple[str, str] | None = None
                        ) -> Policies:
    emails = {"device": OUTPUTS.device_service_account, "pipeline": OUTPUTS.pipeline_service_account,
              "monitor": OUTPUTS.monitor_service_account}
    found: dict[str, dict[str, set[str]]] = {target: {} for target in
                                             ("telemetry_topic", "monitor_subscription", "registry_bucket", "project")}
    for grant in FLEET_GRANTS:
        if drop == (grant.identity, grant.role):
            continue
        found[grant.on].setdefault(expected_role(grant, OUTPUTS), set()).add(f"serviceAccount:{emails[grant.identity]}")
    for target, roles in (extra or {}).items():
        for role, members in roles.items():
            found[target].setdefault(role, set()).update(members)
    return Policies(**{target: {role: frozenset(m) for role, m in roles.items()} for target, roles in found.items()})


def test_each_identity_holds_exactly_its_roles() -> None:
    results = check_identity_roles(_grants_as_policies(), OUTPUTS)
    assert [result.status for result in results] == [Status.OK] * 3
    monitor = results[2]
    assert "roles/pubsub.viewer" in monitor.detail


def test_a_missing_and_an_extra_role_are_reported() -> None:
    policies = _grants_as_policies(
        drop=("monitor", "roles/pubsub.viewer"),
        extra={"project": {"roles/editor": {f"serviceAccount:{OUTPUTS.device_service_account}"}}})
    device, pipeline, monitor = check_identity_roles(policies, OUTPUTS)
    assert pipeline.status is Status.OK
    assert monitor.status is Status.FAIL and "missing roles/pubsub.viewer on the monitor subscription" in monitor.detail
    assert device.status is Status.FAIL and "extra roles/editor on the project" in device.detail


def test_the_monitor_reading_the_whole_registry_is_reported_as_wider_than_the_program() -> None:
    """Issue 22 item 5: the program conditions the monitor's read on fleet/; an unconditioned read (set by hand, or
    by an older stack) is an extra role, and the conditioned one is missing."""
    monitor = f"serviceAccount:{OUTPUTS.monitor_service_account}"
    # The bucket's policy as the storage client returns it (requested_policy_version=3): dict bindings.
    stored = role_members([{"role": "roles/storage.objectViewer", "members": [monitor]}])
    policies = _grants_as_policies()
    policies = Policies(policies.telemetry_topic, policies.monitor_subscription,
                        {**{role: members for role, members in policies.registry_bucket.items()
                            if monitor not in members or "fleet/" not in role}, **stored},
                        policies.project)
    *_, result = check_identity_roles(policies, OUTPUTS)
    assert result.status is Status.FAIL
    assert "extra roles/storage.objectViewer on the registry bucket" in result.detail
    assert 'missing roles/storage.objectViewer if resource.name.startsWith("projects/_/buckets/' in result.detail


def test_a_conditional_binding_read_from_the_bucket_policy_matches_the_programs_grant() -> None:
    conditioned = [grant for grant in FLEET_GRANTS if grant.object_prefix]
    assert {grant.name for grant in conditioned} == {"monitor-reads-device-keys", "device-files-enrol-requests",
                                                "device-files-spot-check-frames"}
    for grant in conditioned:
        expression = expected_role(grant, OUTPUTS).split(" if ", 1)[1]
        read = role_members([{"role": grant.role, "members": ["serviceAccount:m"],
                              "condition": {"title": f"only {grant.object_prefix}", "expression": expression}}])
        assert read == {expected_role(grant, OUTPUTS): frozenset({"serviceAccount:m"})}


def test_a_device_without_its_enrolment_request_grant_or_with_it_bucket_wide_is_reported() -> None:
    """Issue 23 item 4: devices file enrolment requests create-only under fleet/enrol-requests/ and nowhere else."""
    device = f"serviceAccount:{OUTPUTS.device_service_account}"
    [grant] = [grant for grant in FLEET_GRANTS if grant.name == "device-files-enrol-requests"]
    assert grant.role == "roles/storage.objectCreator" and grant.object_prefix == "fleet/enrol-requests/"
    conditioned = expected_role(grant, OUTPUTS)
    assert conditioned.startswith('roles/storage.objectCreator if resource.name.startsWith("projects/_/buckets/')
    result, *_ = check_identity_roles(_grants_as_policies(drop=("device", grant.role)), OUTPUTS)
    assert result.status is Status.FAIL and f"missing {conditioned} on the registry bucket" in result.detail
    wide = _grants_as_policies(drop=("device", grant.role),
                               extra={"registry_bucket": {"roles/storage.objectCreator": {device}}})
    result, *_ = check_identity_roles(wide, OUTPUTS)
    assert result.status is Status.FAIL and "extra roles/storage.objectCreator on the registry bucket" in result.detail


class Subscriber:
    """get_subscription / get_iam_policy answered with `pubsub_v1.types.Subscription` and iam `Policy`."""

    def __init__(self, attempts: int = 5, agent: bool = True) -> None:
        self.attempts, self.agent = attempts, agent

    def get_subscription(self, request: dict[str, Any]) -> pubsub_v1.types.Subscription:
        return pubsub_v1.types.Subscription(
            name=request["subscription"], topic=OUTPUTS.telemetry_topic_id,
            dead_letter_policy=pubsub_v1.types.DeadLetterPolicy(
                dead_letter_topic=f"projects/{PROJECT}/topics/{OUTPUTS.dead_letter_topic}",
                max_delivery_attempts=self.attempts))

    def get_iam_policy(self, request: dict[str, Any]) -> policy_pb2.Policy:
        members = [PUBSUB_AGENT] if self.agent else []
        return policy_pb2.Policy(bindings=[policy_pb2.Binding(role="roles/pubsub.subscriber", members=members)])


class Publisher:
    def get_iam_policy(self, request: dict[str, Any]) -> policy_pb2.Policy:
        return policy_pb2.Policy(bindings=[policy_pb2.Binding(role="roles/pubsub.publisher", members=[PUBSUB_AGENT])])


def test_dead_lettering_is_checked_with_the_service_agents_grants() -> None:
    assert check_dead_letter(Subscriber(), Publisher(), OUTPUTS).status is Status.OK
    no_agent = check_dead_letter(Subscriber(agent=False), Publisher(), OUTPUTS)
    assert no_agent.status is Status.FAIL and "cannot acknowledge" in no_agent.detail


class Metrics:
    def __init__(self, types: set[str]) -> None:
        self.types = types

    def list_metric_descriptors(self, request: dict[str, Any]) -> list[metric_pb2.MetricDescriptor]:
        assert request["filter"] == 'metric.type = starts_with("custom.googleapis.com/edgefleet/")'
        return [metric_pb2.MetricDescriptor(type=metric_type) for metric_type in sorted(self.types)]


def test_metric_descriptors_present_and_missing() -> None:
    assert check_metric_descriptors(Metrics(set(METRICS_BY_TYPE)), PROJECT).status is Status.OK
    missing = sorted(METRICS_BY_TYPE)[0]
    result = check_metric_descriptors(Metrics(set(METRICS_BY_TYPE) - {missing}), PROJECT)
    assert result.status is Status.FAIL and missing.rsplit("edgefleet/", 1)[-1] in result.detail


class Denied:
    """Every call refused, as Google answers a caller without the permission."""

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            raise google_exceptions.PermissionDenied("The caller does not have permission")
        return call


def test_x509_devices_need_sts_and_iam_credentials_enabled() -> None:
    """Review of issue 22: with devices.credentials x509 the program enables STS and IAM Credentials (devices
    exchange their certificates through them), but `apis` did not look at them: a project where they are off
    passed, and every device then failed to authenticate."""
    x509 = OUTPUTS.model_copy(update={"device_workload_identity_provider": f"projects/{PROJECT_NUMBER}/locations/"
                                      "global/workloadIdentityPools/edgefleet-devices/providers/x509"})
    clients = CloudClients(ServiceUsage(set(CORE_APIS) | set(PREREQUISITE_APIS)), *(Denied(),) * 6)

    apis = next(result for result in run_checks(clients, x509, sample=b"{}") if result.name == "apis")
    assert apis.status is Status.FAIL
    assert "sts.googleapis.com" in apis.detail and "iamcredentials.googleapis.com" in apis.detail
    assert f"gcloud services enable sts.googleapis.com iamcredentials.googleapis.com --project {PROJECT}" in apis.fix
    # With key credentials (no X.509 provider) the two are not the program's, and not asked for.
    apis = next(result for result in run_checks(clients, OUTPUTS, sample=b"{}") if result.name == "apis")
    assert apis.status is Status.OK
    everything = CloudClients(ServiceUsage(set(CORE_APIS) | set(PREREQUISITE_APIS) | set(X509_APIS)),
                              *(Denied(),) * 6)
    apis = next(result for result in run_checks(everything, x509, sample=b"{}") if result.name == "apis")
    assert apis.status is Status.OK


@pytest.mark.parametrize("bigquery", [False, True])
@pytest.mark.parametrize("x509_devices", [False, True])
def test_the_apis_checked_are_the_apis_the_program_enables(bigquery: bool, x509_devices: bool) -> None:
    from edgefleet.infra.services import ServicesArgs

    enabled = ServicesArgs(project=PROJECT, bigquery=bigquery, x509_devices=x509_devices).apis
    assert expected_apis(bigquery=bigquery, x509_devices=x509_devices) == enabled


def test_credentials_that_cannot_read_are_told_so_and_nothing_raises() -> None:
    denied = Denied()
    clients = CloudClients(*(denied,) * 7)
    results = run_checks(clients, OUTPUTS, sample=b"{}")
    assert results and all(result.status is Status.FAIL for result in results)
    assert all("your credentials cannot read" in result.detail for result in results)


def test_the_command_prints_one_finding_per_check_and_fails_on_any(tmp_path: Path) -> None:
    """The command runs the real checks on the clients it is handed (Click's context object, the seam), not
    patched functions of the module under test; its `--json` is the list of findings, the table says the same."""
    outputs_file = tmp_path / "outputs.json"
    outputs_file.write_text(OUTPUTS.model_dump_json())
    denied = Denied()
    clients = CloudClients(ServiceUsage(set(CORE_APIS) | set(PREREQUISITE_APIS)), *(denied,) * 6)
    result = CliRunner().invoke(app, ["cloud", "check", str(outputs_file), "--json"], obj=clients)
    assert result.exit_code == 1
    findings = parse_findings(result.stdout)
    assert [(f.name, f.status) for f in findings[:2]] == [("prerequisites", Status.OK), ("apis", Status.OK)]
    assert findings[0].detail.startswith("serviceusage.googleapis.com, cloudresourcemanager")
    assert findings[1].detail.startswith(f"{len(CORE_APIS)} enabled")
    bucket = next(f for f in findings if f.name == "registry bucket")
    assert bucket.status is Status.FAIL and bucket.detail.startswith("your credentials cannot read bucket gs://")
    failed = len(findings) - 2
    assert failed >= 5 and all(f.status is Status.FAIL for f in findings[2:])
    table = CliRunner().invoke(app, ["cloud", "check", str(outputs_file)], obj=clients, env={"COLUMNS": "250"})
    assert table.exit_code == 1 and f"2 ok, {failed} failed" in table.output
    assert all(f.name in table.output for f in findings)


# --- prerequisites of the first `pulumi up` (issue 22, item 9) -------------------------------------------------


def test_resource_manager_off_is_named_as_the_prerequisite_the_provider_needs() -> None:
    result = check_prerequisites(ServiceUsage({"serviceusage.googleapis.com"}), PROJECT)
    assert result.status is Status.FAIL
    assert "cloudresourcemanager.googleapis.com" in result.detail and "provider" in result.detail
    assert "serviceusage.googleapis.com:" not in result.detail
    assert result.fix.startswith(f"gcloud services enable cloudresourcemanager.googleapis.com --project {PROJECT}")
    assert check_prerequisites(ServiceUsage(set(PREREQUISITE_APIS)), PROJECT).status is Status.OK


class ServiceUsageDisabled:
    """What Google answers when the Service Usage API itself is off (403 SERVICE_DISABLED)."""

    def batch_get_services(self, request: dict[str, Any]) -> Any:
        raise google_exceptions.PermissionDenied(
            f"Service Usage API has not been used in project {PROJECT_NUMBER} before or it is disabled. Enable it "
            "by visiting https://console.developers.google.com/apis/api/serviceusage.googleapis.com/overview")


def test_service_usage_off_is_named_not_reported_as_missing_credentials() -> None:
    result = check_prerequisites(ServiceUsageDisabled(), PROJECT)
    assert result.status is Status.FAIL
    assert result.detail.startswith(f"serviceusage.googleapis.com is not enabled in {PROJECT}")
    assert "your credentials" not in result.detail
    assert "gcloud services enable serviceusage.googleapis.com cloudresourcemanager.googleapis.com" in result.fix


def test_before_the_first_pulumi_up_the_command_checks_only_the_prerequisites() -> None:
    clients = CloudClients(ServiceUsage({"serviceusage.googleapis.com"}), *(Denied(),) * 6)
    result = CliRunner().invoke(app, ["cloud", "check", "--project", PROJECT, "--json"], obj=clients)
    assert result.exit_code == 1
    [finding] = parse_findings(result.stdout)
    assert (finding.name, finding.status) == ("prerequisites", Status.FAIL)
    assert finding.detail.startswith("not enabled: cloudresourcemanager.googleapis.com")
    result = CliRunner().invoke(app, ["cloud", "check", "--project", PROJECT], obj=clients)
    assert result.exit_code == 1 and "0 ok, 1 failed" in result.output
    ready = CloudClients(ServiceUsage(set(PREREQUISITE_APIS)), *(Denied(),) * 6)
    result = CliRunner().invoke(app, ["cloud", "check", "--project", PROJECT], obj=ready)
    assert result.exit_code == 0 and "1 ok, 0 failed" in result.output
    assert "run `pulumi up`" in result.output


def test_the_command_with_nothing_to_check_says_what_to_pass() -> None:
    result = CliRunner().invoke(app, ["cloud", "check"], obj=CloudClients(*(Denied(),) * 7))
    assert result.exit_code != 0 and "--project" in result.output


@pytest.mark.skipif(not os.environ.get("EDGEFLEET_CLOUD_CHECK_OUTPUTS"),
                    reason="needs a real project: EDGEFLEET_CLOUD_CHECK_OUTPUTS=<pulumi stack output --json file>")
def test_a_real_project_after_pulumi_up() -> None:
    result = CliRunner().invoke(app, ["cloud", "check", os.environ["EDGEFLEET_CLOUD_CHECK_OUTPUTS"]])
    assert result.exit_code == 0, result.output
