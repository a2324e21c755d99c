"""The Pulumi program's real wiring, run under Pulumi's mocks (see conftest.py for what is mocked and why)."""

from __future__ import annotations

import json

import pulumi
import pytest

from edgefleet.infra.__main__ import build, main
from edgefleet.infra.dashboard import BUILTIN_METRICS
from edgefleet.infra.outputs import REQUIRED_OUTPUT_KEYS, StackOutputs
from edgefleet.infra.policy import (
    PRIMITIVE_ROLES,
    PUBLIC_MEMBERS,
    check_all,
    iam_bindings,
    monitoring_metric_types,
)
from edgefleet.kernel.contracts import layout
from edgefleet.kernel.contracts.telemetry import telemetry_avro_schema
from edgefleet.kernel.metrics import ALL_METRICS, DRIFT_METRICS, METRICS_BY_TYPE
from tests.infra.support.testing import (
    NOTIFICATION_CHANNEL,
    PROJECT,
    PROJECT_NUMBER,
    StackRun,
    fleet_ca_pem,
    pulumi_config,
    run_program,
    stack_config,
)

PUBSUB_AGENT = f"serviceAccount:service-{PROJECT_NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com"
STORAGE_WRITE_PERMISSION_ROLES = {
    "roles/storage.objectCreator",
    "roles/storage.objectUser",
    "roles/storage.objectAdmin",
    "roles/storage.admin",
    "roles/storage.legacyBucketWriter",
    "roles/storage.legacyBucketOwner",
    "roles/owner",
    "roles/editor",
}


def _account(stack: StackRun, role: str) -> str:
    return f"serviceAccount:{stack.outputs[f'{role}_service_account']}"


def _grants(stack: StackRun, member: str) -> set[tuple[str, str, str]]:
    """(IAM resource kind, role, target short name) granted to `member`."""
    return {
        (binding.scope, binding.role, binding.target)
        for binding in iam_bindings(stack.resources)
        if binding.member == member
    }


def test_every_grant_goes_to_a_fleet_account_or_the_pubsub_agent(default_stack: StackRun) -> None:
    members = {binding.member for binding in iam_bindings(default_stack.resources)}
    expected = {_account(default_stack, role) for role in ("device", "pipeline", "monitor")} | {PUBSUB_AGENT}
    device_certificates = ("principalSet://iam.googleapis.com/projects/"
                           f"{PROJECT_NUMBER}/locations/global/workloadIdentityPools/edgefleet-devices/*")
    assert members == expected | {device_certificates}
    assert all(member.endswith(f"@{PROJECT}.iam.gserviceaccount.com") for member in expected - {PUBSUB_AGENT})


def test_device_account_publishes_telemetry_reads_the_registry_and_files_enrolment_requests_only(
        default_stack: StackRun) -> None:
    grants = _grants(default_stack, _account(default_stack, "device"))
    assert grants == {
        ("pubsub/topicIAMMember", "roles/pubsub.publisher", layout.TELEMETRY_TOPIC),
        ("storage/bucketIAMMember", "roles/storage.objectViewer", default_stack.outputs["registry_bucket"]),
        ("storage/bucketIAMMember", "roles/storage.objectCreator", default_stack.outputs["registry_bucket"]),
    }


def test_device_account_cannot_write_the_registry_beyond_creating_enrolment_requests(default_stack: StackRun) -> None:
    """Its write grants are create-only (objectCreator: no delete, so no overwrite), each conditioned on its prefix:
    fleet/enrol-requests/ (issue 23 item 4) and spotcheck/ (issue 25: the labelled spot check's frames)."""
    from edgefleet.infra.names import object_prefix_condition

    device = _account(default_stack, "device")
    bindings = [binding for binding in iam_bindings(default_stack.resources) if binding.member == device]
    assert bindings, "the device account has no grant at all"
    writes = [binding for binding in bindings if binding.role in STORAGE_WRITE_PERMISSION_ROLES]
    assert [binding.role for binding in writes] == ["roles/storage.objectCreator"] * 2
    bucket = default_stack.outputs["registry_bucket"]
    assert {binding.resource.inputs["condition"]["expression"] for binding in writes} == {
        object_prefix_condition(bucket, "fleet/enrol-requests/"), object_prefix_condition(bucket, "spotcheck/")}


def test_pipeline_account_writes_the_registry_and_nothing_else(default_stack: StackRun) -> None:
    grants = _grants(default_stack, _account(default_stack, "pipeline"))
    assert grants == {
        ("storage/bucketIAMMember", "roles/storage.objectUser", default_stack.outputs["registry_bucket"])
    }


def test_monitor_account_consumes_and_checks_its_subscription_and_writes_metrics(default_stack: StackRun) -> None:
    grants = _grants(default_stack, _account(default_stack, "monitor"))
    assert grants == {
        ("pubsub/subscriptionIAMMember", "roles/pubsub.subscriber", layout.MONITOR_SUBSCRIPTION),
        ("pubsub/subscriptionIAMMember", "roles/pubsub.viewer", layout.MONITOR_SUBSCRIPTION),
        ("projects/iAMMember", "roles/monitoring.metricWriter", PROJECT),
        ("storage/bucketIAMMember", "roles/storage.objectViewer", default_stack.outputs["registry_bucket"]),
    }


def _bucket_grant(stack: StackRun, role: str, bucket_role: str | None = None) -> dict:
    [record] = [binding.resource for binding in iam_bindings(stack.resources)
                if binding.member == _account(stack, role) and binding.scope == "storage/bucketIAMMember"
                and bucket_role in (None, binding.role)]
    return record.inputs


def test_the_monitor_reads_only_the_fleet_records_of_the_registry(default_stack: StackRun) -> None:
    """Issue 22 item 5: the monitor reads fleet/devices/ and fleet/revoked/ (device keys, revocations), never
    the models or channel pointers: its objectViewer is conditioned on the object name prefix, and a listing
    is allowed only with a prefix under fleet/ (a listing is checked against the bucket, not an object)."""
    bucket = default_stack.outputs["registry_bucket"]
    condition = _bucket_grant(default_stack, "monitor")["condition"]
    assert condition["expression"] == (
        f'resource.name.startsWith("projects/_/buckets/{bucket}/objects/fleet/") || '
        'api.getAttribute("storage.googleapis.com/objectListPrefix", "").startsWith("fleet/")')
    assert condition["title"]
    assert layout.FLEET_DEVICES_PREFIX.startswith("fleet/") and layout.FLEET_REVOKED_PREFIX.startswith("fleet/")
    # Devices and the pipeline read (and write) models and pointers all over the bucket: no condition.
    assert "condition" not in _bucket_grant(default_stack, "device", "roles/storage.objectViewer")
    assert "condition" not in _bucket_grant(default_stack, "pipeline")


def test_device_certificates_federate_through_an_x509_provider_trusting_the_fleet_ca(
    default_stack: StackRun,
) -> None:
    """Issue 22 item 3: no service account key; each device's certificate, signed by the fleet CA, may act as the
    device service account (and so has exactly its grants)."""
    [pool] = default_stack.of_type("WorkloadIdentityPool")
    [provider] = default_stack.of_type("WorkloadIdentityPoolProvider")
    assert pool.inputs["workloadIdentityPoolId"] == "edgefleet-devices"
    assert provider.inputs["workloadIdentityPoolId"] == "edgefleet-devices"
    anchors = provider.inputs["x509"]["trustStore"]["trustAnchors"]
    assert [anchor["pemCertificate"] for anchor in anchors] == [fleet_ca_pem()]
    assert provider.inputs["attributeMapping"] == {"google.subject": "assertion.subject.dn.cn"}
    assert "oidc" not in provider.inputs and "aws" not in provider.inputs
    [binding] = [record for record in default_stack.resources
                 if record.type == "gcp:serviceaccount/iAMMember:IAMMember"]
    device_account = f"projects/{PROJECT}/serviceAccounts/{default_stack.outputs['device_service_account']}"
    assert binding.inputs == {**binding.inputs, "serviceAccountId": device_account,
                              "role": "roles/iam.workloadIdentityUser",
                              "member": f"principalSet://iam.googleapis.com/{pool.inputs['name']}/*"}
    assert default_stack.outputs["device_workload_identity_provider"] == provider.inputs["name"]
    assert not [record for record in default_stack.resources if record.type.endswith(":Key")]  # no account keys


def test_intermediate_cas_go_into_the_trust_store() -> None:
    stack = run_program(lambda: build(stack_config(devices={"intermediateCas": [fleet_ca_pem("site CA")]})))
    [provider] = stack.of_type("WorkloadIdentityPoolProvider")
    assert provider.inputs["x509"]["trustStore"]["intermediateCas"] == [{"pemCertificate": fleet_ca_pem("site CA")}]


def test_every_alert_policy_notifies_the_configured_channel_or_none_only_when_allowed(
    default_stack: StackRun,
) -> None:
    policies = default_stack.of_type("AlertPolicy")
    assert len(policies) == 5
    assert all(policy.inputs["notificationChannels"] == [NOTIFICATION_CHANNEL] for policy in policies)
    silent = run_program(lambda: build(stack_config(alerts={"notificationChannels": [],
                                                            "allowWithoutChannel": True})))
    assert all(policy.inputs.get("notificationChannels", []) == [] for policy in silent.of_type("AlertPolicy"))


def test_one_alert_when_the_monitor_stops_not_one_per_device(default_stack: StackRun) -> None:
    """The monitor writes each heard device's telemetry count every period: summed over the fleet with no
    group-by it is one series, whose absence is one incident; the per-device silence policy groups by device."""
    [stopped] = [policy for policy in default_stack.of_type("AlertPolicy")
                 if policy.name == "edgefleet-monitor-stopped"]
    absent, unconsumed = stopped.inputs["conditions"]
    assert stopped.inputs["combiner"] == "OR"
    assert 'custom.googleapis.com/edgefleet/device/telemetry_messages' in absent["conditionAbsent"]["filter"]
    [aggregation] = absent["conditionAbsent"]["aggregations"]
    assert aggregation["crossSeriesReducer"] == "REDUCE_SUM" and not aggregation.get("groupByFields")
    assert absent["conditionAbsent"]["duration"] == "600s"
    threshold = unconsumed["conditionThreshold"]
    assert "oldest_unacked_message_age" in threshold["filter"] and layout.MONITOR_SUBSCRIPTION in threshold["filter"]
    assert threshold["thresholdValue"] == 600
    [silent_device] = [policy for policy in default_stack.of_type("AlertPolicy")
                       if policy.name == "edgefleet-device-silent"]
    grouped = silent_device.inputs["conditions"][0]["conditionAbsent"]["aggregations"][0]["groupByFields"]
    assert grouped == ["metric.label.device_id"]


def test_a_drift_alert_names_the_statistic_that_moved_and_waits_for_its_metric(default_stack: StackRun) -> None:
    """One condition per drift statistic, on the metric the monitor writes for it; created after the Sleep that
    waits for new metric types (Cloud Monitoring refuses a policy on a type it does not see yet)."""
    [drift] = [policy for policy in default_stack.of_type("AlertPolicy") if policy.name == "edgefleet-drift"]
    conditions = drift.inputs["conditions"]
    assert drift.inputs["combiner"] == "OR"
    assert [c["displayName"].split()[0] for c in conditions] == ["class_mix", "score_median", "detections"]
    for condition, metric in zip(conditions, DRIFT_METRICS.values(), strict=True):
        threshold = condition["conditionThreshold"]
        assert f'metric.type="{metric.type}"' in threshold["filter"].replace(" ", "")
        assert threshold["comparison"] == "COMPARISON_GT" and threshold["thresholdValue"] == 0
        assert metric.type in METRICS_BY_TYPE
    assert "${condition.display_name}" in drift.inputs["documentation"]["content"]
    assert "not whether the answers are right" in drift.inputs["documentation"]["content"]
    stricter = run_program(lambda: build(stack_config(alerts={"driftSd": 1.5})))
    [drift] = [policy for policy in stricter.of_type("AlertPolicy") if policy.name == "edgefleet-drift"]
    assert {c["conditionThreshold"]["thresholdValue"] for c in drift.inputs["conditions"]} == {1.5}


def test_no_public_members_and_no_primitive_roles(default_stack: StackRun) -> None:
    bindings = iam_bindings(default_stack.resources)
    assert bindings
    assert not {binding.member for binding in bindings} & PUBLIC_MEMBERS
    assert not {binding.role for binding in bindings} & PRIMITIVE_ROLES
    assert check_all(default_stack.resources) == []


def test_monitor_subscription_dead_letters_after_the_configured_attempts(default_stack: StackRun) -> None:
    subscription = default_stack.named("Subscription", layout.MONITOR_SUBSCRIPTION)
    policy = subscription.inputs["deadLetterPolicy"]
    assert policy["deadLetterTopic"] == f"projects/{PROJECT}/topics/{layout.TELEMETRY_DEAD_LETTER_TOPIC}"
    assert policy["maxDeliveryAttempts"] == 5
    assert subscription.inputs["topic"] == layout.TELEMETRY_TOPIC
    dead_letters = default_stack.named("Subscription", layout.DEAD_LETTER_SUBSCRIPTION)
    assert dead_letters.inputs["topic"] == layout.TELEMETRY_DEAD_LETTER_TOPIC
    assert "deadLetterPolicy" not in dead_letters.inputs


def test_pubsub_service_agent_can_dead_letter(default_stack: StackRun) -> None:
    assert _grants(default_stack, PUBSUB_AGENT) == {
        ("pubsub/topicIAMMember", "roles/pubsub.publisher", layout.TELEMETRY_DEAD_LETTER_TOPIC),
        ("pubsub/subscriptionIAMMember", "roles/pubsub.subscriber", layout.MONITOR_SUBSCRIPTION),
    }


def test_dead_letter_attempts_follow_the_stack_config() -> None:
    config = stack_config(telemetry={"deadLetterMaxAttempts": 12})
    stack = run_program(lambda: build(config))
    policy = stack.named("Subscription", layout.MONITOR_SUBSCRIPTION).inputs["deadLetterPolicy"]
    assert policy["maxDeliveryAttempts"] == 12


def test_topic_validates_the_generated_avro_schema(default_stack: StackRun) -> None:
    schema = default_stack.named("Schema", layout.TELEMETRY_SCHEMA)
    assert schema.inputs["type"] == "AVRO"
    assert json.loads(schema.inputs["definition"]) == telemetry_avro_schema()
    topic = default_stack.named("Topic", layout.TELEMETRY_TOPIC)
    assert topic.inputs["schemaSettings"] == {
        "schema": f"projects/{PROJECT}/schemas/{layout.TELEMETRY_SCHEMA}",
        "encoding": "JSON",
    }
    assert topic.inputs["messageRetentionDuration"] == "604800s"


def test_schema_enforcement_can_be_turned_off_but_the_schema_stays() -> None:
    config = stack_config(telemetry={"enforceSchema": False})
    stack = run_program(lambda: build(config))
    assert "schemaSettings" not in stack.named("Topic", layout.TELEMETRY_TOPIC).inputs
    assert stack.named("Schema", layout.TELEMETRY_SCHEMA).inputs["type"] == "AVRO"
    assert stack.outputs["telemetry_schema_enforced"] is False


def test_registry_bucket_is_hardened_and_protected(default_stack: StackRun) -> None:
    [bucket] = default_stack.of_type("Bucket")
    inputs = bucket.inputs
    assert inputs["name"] == f"{PROJECT}-edgefleet-registry"
    assert inputs["uniformBucketLevelAccess"] is True
    assert inputs["publicAccessPrevention"] == "enforced"
    assert inputs["versioning"] == {"enabled": True}
    assert inputs.get("forceDestroy") in (None, False)
    conditions = [
        rule["condition"] for rule in inputs["lifecycleRules"] if rule["action"]["type"] == "Delete"
    ]
    assert {"withState": "ARCHIVED", "daysSinceNoncurrentTime": 30} in conditions
    assert {"withState": "ARCHIVED", "numNewerVersions": 5} in conditions
    assert bucket.protect is True


def test_children_are_parented_to_their_component(default_stack: StackRun) -> None:
    components = {
        default_stack.urns[(record.type, record.name)]
        for record in default_stack.resources
        if record.type.startswith("edgefleet:infra:")
    }
    children = [
        record for record in default_stack.resources if record.type.startswith(("gcp:", "time:"))
    ]
    assert len(components) == 6  # services, telemetry, registry, identity, device credentials, monitoring
    assert children and all(record.parent in components for record in children)
    assert all(record.inputs.get("project", PROJECT) == PROJECT for record in children)


def test_a_descriptor_for_every_metric_the_monitor_writes(default_stack: StackRun) -> None:
    descriptors = {
        record.inputs["type"]: record.inputs for record in default_stack.of_type("MetricDescriptor")
    }
    assert set(descriptors) == set(METRICS_BY_TYPE)
    for metric in ALL_METRICS:
        descriptor = descriptors[metric.type]
        assert (descriptor["metricKind"], descriptor["valueType"], descriptor["unit"]) == (
            metric.kind.value,
            metric.value_type.value,
            metric.unit,
        )
        assert [label["key"] for label in descriptor["labels"]] == list(metric.label_keys)


def test_every_dashboard_and_alert_metric_is_written_by_the_monitor_or_pubsub(
    default_stack: StackRun,
) -> None:
    found = monitoring_metric_types(default_stack.resources)
    assert len(found) == 6  # the dashboard and five alert policies
    assert all(found.values()), "a dashboard or alert whose metrics could not be read"
    named = set().union(*found.values())
    assert named <= set(METRICS_BY_TYPE) | BUILTIN_METRICS
    # The dashboard shows latency, versions, health, spool, backlog and dead letters.
    [dashboard] = default_stack.of_type("Dashboard")
    charted = found[dashboard.name]
    assert set(METRICS_BY_TYPE) <= charted
    assert BUILTIN_METRICS <= charted


def test_alerts_use_the_configured_thresholds_and_channels() -> None:
    channel = f"projects/{PROJECT}/notificationChannels/1234567890"
    config = stack_config(
        alerts={
            "silentMinutes": 15,
            "latencyP95Ms": 42.5,
            "deadLetterMessages": 3,
            "notificationChannels": [channel],
        }
    )
    stack = run_program(lambda: build(config))
    policies = {record.name: record.inputs for record in stack.of_type("AlertPolicy")}
    silent = policies["edgefleet-device-silent"]["conditions"][0]["conditionAbsent"]
    assert silent["duration"] == "900s"
    assert silent["aggregations"][0]["groupByFields"] == ["metric.label.device_id"]
    latency = policies["edgefleet-latency-p95"]["conditions"][0]["conditionThreshold"]
    assert (latency["comparison"], latency["thresholdValue"]) == ("COMPARISON_GT", 42.5)
    dead = policies["edgefleet-dead-letters"]["conditions"][0]["conditionThreshold"]
    assert dead["thresholdValue"] == 3
    assert f'resource.label.subscription_id="{layout.DEAD_LETTER_SUBSCRIPTION}"' in dead["filter"]
    assert all(policy["notificationChannels"] == [channel] for policy in policies.values())


def test_bigquery_export_is_optional_and_least_privilege(default_stack: StackRun) -> None:
    assert default_stack.of_type("Table") == []
    assert "bigquery_table" not in default_stack.outputs
    stack = run_program(lambda: build(stack_config(bigquery={"dataset": "fleet_analytics"})))
    [table] = stack.of_type("Table")
    assert (table.inputs["datasetId"], table.inputs["tableId"]) == ("fleet_analytics", "telemetry")
    [subscription] = [record for record in stack.of_type("Subscription") if "bigqueryConfig" in record.inputs]
    assert subscription.inputs["bigqueryConfig"]["table"] == f"{PROJECT}.fleet_analytics.telemetry"
    assert subscription.inputs["bigqueryConfig"]["writeMetadata"] is True
    assert subscription.inputs["deadLetterPolicy"]["maxDeliveryAttempts"] == 5
    assert ("bigquery/iamMember", "roles/bigquery.dataEditor", "telemetry") in _grants(stack, PUBSUB_AGENT)
    assert stack.outputs["bigquery_table"] == f"{PROJECT}.fleet_analytics.telemetry"
    assert check_all(stack.resources) == []


def test_outputs_are_exported_and_feed_the_config() -> None:
    stack = run_program(main, config=pulumi_config(**{"edgefleet:region": "europe-west4"}))
    assert set(REQUIRED_OUTPUT_KEYS) <= set(stack.outputs)
    outputs = StackOutputs.model_validate(stack.outputs)
    assert outputs.region == "europe-west4"
    assert outputs.telemetry_topic == layout.TELEMETRY_TOPIC
    assert outputs.registry_uri == f"gs://{outputs.registry_bucket}"
    assert outputs.device_service_account == f"edgefleet-device@{PROJECT}.iam.gserviceaccount.com"
    exported = pulumi.runtime.get_root_resource().outputs
    assert set(REQUIRED_OUTPUT_KEYS) <= set(exported)


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({}, "edgefleet:project"),
        ({"edgefleet:project": "My Project"}, "edgefleet:project"),
        (
            pulumi_config(**{"edgefleet:telemetry": '{"deadLetterMaxAttempts": 3}'}),
            "edgefleet:telemetry.deadLetterMaxAttempts",
        ),
        (pulumi_config(**{"edgefleet:projet": "typo"}), "edgefleet:projet"),
        ({"edgefleet:project": PROJECT}, "edgefleet:alerts"),  # no channel and no fleet CA: refused at preview
    ],
)
def test_bad_stack_config_fails_before_anything_is_created(config: dict[str, str], key: str) -> None:
    created: list[str] = []

    def program() -> dict[str, pulumi.Input]:
        outputs = main()
        created.append("built")
        return outputs

    with pytest.raises(Exception, match=key.replace(".", r"\.")) as raised:
        run_program(program, config=config, preview=True)
    assert "pulumi config" in str(raised.value)
    assert created == []
