"""`edgefleet cloud check`: is the real project what the fleet needs? Read-only calls, the operator's credentials.

After `pulumi up`, each check reads one thing from Google Cloud and says ok, or what is wrong and what to run:
the APIs are enabled (STS and IAM Credentials too with X.509 devices), the telemetry topic enforces the schema
and that schema accepts what this agent sends, the registry bucket is hardened, each identity holds exactly its
roles (`FLEET_GRANTS`), the fleet-monitor subscription dead-letters (and the Pub/Sub service agent can do it),
the custom metric descriptors exist.

Each check is a function taking its client first and returning a `Finding` (edgefleet.kernel.findings); a Google
API error becomes a failed check naming the thing (a check never raises for the project's state). The clients it
reads with are infra/cloud_clients.py's. No Pulumi import.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from google.api_core import exceptions as google_exceptions

from edgefleet.infra.cloud_clients import CloudClients
from edgefleet.infra.names import (
    API_BIGQUERY,
    API_RESOURCE_MANAGER,
    API_SERVICE_USAGE,
    API_SQLADMIN,
    CORE_APIS,
    FLEET_STATE_ROLES,
    PREREQUISITE_APIS,
    ROLE_PUBSUB_PUBLISHER,
    ROLE_PUBSUB_SUBSCRIBER,
    X509_APIS,
    FleetGrant,
    cloudsql_instance_condition,
    fleet_grants,
    member,
    object_prefix_condition,
)
from edgefleet.infra.outputs import StackOutputs
from edgefleet.infra.policy import MIN_DEAD_LETTER_ATTEMPTS, PUBSUB_SERVICE_AGENT
from edgefleet.kernel.findings import Finding, Status
from edgefleet.kernel.metrics import METRICS_BY_TYPE

PUBSUB_JSON_ENCODING = 1  # google.pubsub_v1.types.Encoding.JSON
SERVICE_ENABLED = 2  # google.cloud.service_usage_v1.types.State.ENABLED
CUSTOM_METRIC_PREFIX = "custom.googleapis.com/edgefleet/"
PULUMI_UP = "pulumi up (in the repo root)"


def _ok(name: str, detail: str) -> Finding:
    return Finding(name=name, status=Status.OK, detail=detail)


def _fail(name: str, detail: str, fix: str) -> Finding:
    return Finding(name=name, status=Status.FAIL, detail=detail, fix=fix)


def _failed_call(name: str, what: str, error: google_exceptions.GoogleAPICallError) -> Finding:
    if isinstance(error, google_exceptions.NotFound):
        return _fail(name, f"{what} does not exist ({error.message})", PULUMI_UP)
    if isinstance(error, google_exceptions.PermissionDenied | google_exceptions.Unauthenticated):
        return _fail(name, f"your credentials cannot read {what} ({error.message})",
                     "gcloud auth application-default login as a project owner or viewer, then check again")
    return _fail(name, f"reading {what} failed: {error}", "check again; if it persists, see the error")


def _guarded(name: str, what: str, check: Callable[[], Finding]) -> Finding:
    try:
        return check()
    except google_exceptions.GoogleAPICallError as error:
        return _failed_call(name, what, error)


# --- APIs ------------------------------------------------------------------------------------------------

PREREQUISITE_WHY = {
    API_SERVICE_USAGE: "every other API is enabled through it",
    API_RESOURCE_MANAGER: "the Pulumi GCP provider reads the project through it to manage every API, so the "
    "first `pulumi up` fails without it even though the program enables it",
}


def _service_disabled(error: google_exceptions.GoogleAPICallError, api: str) -> bool:
    """Whether Google refused the call because `api` is off (403 SERVICE_DISABLED naming it)."""
    text = f"{error.message} {getattr(error, 'metadata', None) or ''}"
    return isinstance(error, google_exceptions.PermissionDenied) and api in text and (
        getattr(error, "reason", None) == "SERVICE_DISABLED" or "disabled" in text or "not been used" in text)


def check_prerequisites(service_usage: Any, project: str) -> Finding:
    """The two APIs that must be on before the first `pulumi up` (Service Usage, Cloud Resource Manager), by
    name: a check that can run before the stack exists (`edgefleet cloud check --project P`)."""
    name = "prerequisites"
    enable = f"gcloud services enable {' '.join(PREREQUISITE_APIS)} --project {project}"
    try:
        response = service_usage.batch_get_services(request={
            "parent": f"projects/{project}",
            "names": [f"projects/{project}/services/{api}" for api in PREREQUISITE_APIS]})
    except google_exceptions.GoogleAPICallError as error:
        if _service_disabled(error, API_SERVICE_USAGE):
            return _fail(name, f"{API_SERVICE_USAGE} is not enabled in {project} "
                         f"({PREREQUISITE_WHY[API_SERVICE_USAGE]})", f"{enable}, then pulumi up")
        return _failed_call(name, f"the services of project {project}", error)
    enabled = {service.name.rsplit("/", 1)[-1] for service in response.services
               if int(service.state) == SERVICE_ENABLED}
    missing = [api for api in PREREQUISITE_APIS if api not in enabled]
    if missing:
        why = "; ".join(f"{api}: {PREREQUISITE_WHY[api]}" for api in missing)
        return _fail(name, f"not enabled: {why}",
                     f"gcloud services enable {' '.join(missing)} --project {project}, then pulumi up")
    return _ok(name, f"{', '.join(PREREQUISITE_APIS)} enabled (what `pulumi up` needs first)")



def expected_apis(*, bigquery: bool, x509_devices: bool, fleet_state: bool = False) -> tuple[str, ...]:
    """The APIs the program enables (services.py's `ServicesArgs.apis`, without its Pulumi import)."""
    return (CORE_APIS + ((API_BIGQUERY,) if bigquery else ()) + (X509_APIS if x509_devices else ())
            + ((API_SQLADMIN,) if fleet_state else ()))


def check_apis(service_usage: Any, project: str, bigquery: bool, *, x509_devices: bool = False,
               fleet_state: bool = False) -> Finding:
    """The APIs the program enables are enabled (`ServiceUsageClient.batch_get_services`); with X.509 devices
    (`devices.credentials: x509`) also STS and IAM Credentials, which devices exchange their certificates through."""
    apis = expected_apis(bigquery=bigquery, x509_devices=x509_devices, fleet_state=fleet_state)

    def run() -> Finding:
        response = service_usage.batch_get_services(
            request={"parent": f"projects/{project}", "names": [f"projects/{project}/services/{api}" for api in apis]}
        )
        enabled = {service.name.rsplit("/", 1)[-1] for service in response.services
                   if int(service.state) == SERVICE_ENABLED}
        missing = [api for api in apis if api not in enabled]
        if missing:
            return _fail("apis", f"not enabled: {', '.join(missing)}",
                         f"{PULUMI_UP}, or gcloud services enable {' '.join(missing)} --project {project}")
        return _ok("apis", f"{len(apis)} enabled ({', '.join(apis)})")

    return _guarded("apis", f"the services of project {project}", run)


# --- telemetry topic and its schema ----------------------------------------------------------------------


def check_topic_schema(publisher: Any, schemas: Any, outputs: StackOutputs, sample: bytes) -> Finding:
    """The topic enforces the stack's schema (JSON encoding) and that schema accepts `sample`, a message this
    agent would send (`SchemaServiceClient.validate_message`)."""
    name = "topic schema"

    def run() -> Finding:
        topic = publisher.get_topic(request={"topic": outputs.telemetry_topic_id})
        settings = topic.schema_settings
        if not outputs.telemetry_schema_enforced:
            return _ok(name, "schema enforcement is off in the stack config (telemetry.enforceSchema)")
        if settings.schema != outputs.telemetry_schema_id or int(settings.encoding) != PUBSUB_JSON_ENCODING:
            return _fail(name, f"{outputs.telemetry_topic} validates {settings.schema or 'nothing'} "
                         f"(encoding {settings.encoding}), not {outputs.telemetry_schema_id} as JSON", PULUMI_UP)
        try:
            schemas.validate_message(request={"parent": f"projects/{outputs.project}",
                                              "name": outputs.telemetry_schema_id, "message": sample,
                                              "encoding": PUBSUB_JSON_ENCODING})
        except google_exceptions.InvalidArgument as error:
            return _fail(name, f"{outputs.telemetry_schema_id} refuses this agent's telemetry "
                         f"({error.message})", f"{PULUMI_UP} with this version of edgefleet (it commits "
                         "the schema generated from the telemetry contract)")
        return _ok(name, f"{outputs.telemetry_topic} enforces {outputs.telemetry_schema_id}, "
                   "which accepts this agent's telemetry")

    return _guarded(name, f"topic {outputs.telemetry_topic_id}", run)


def sample_telemetry() -> bytes:
    """A message exactly as this agent sends it (the device's own builder and encoder)."""
    from edgefleet.device.telemetry.builder import InferenceRecord, TelemetryBuilder
    from edgefleet.device.telemetry.health import read_health
    from edgefleet.kernel.contracts.telemetry import ModelRef, ResultItem

    now = time.time()
    builder = TelemetryBuilder("every", 60.0, sample_results=True, max_results=1, start_time=now)
    model = ModelRef(name="check", version="1.0.0", variant="cpu", backend="cpu")
    [draft, *_] = builder.add_inference(InferenceRecord(now, model, 1.0, (ResultItem(id=0, label="x", score=0.5),)))
    return draft.build(1, device_id="cloud-check", health=read_health()).to_json_bytes()


# --- registry bucket ---------------------------------------------------------------------------------------


def check_bucket(storage_client: Any, bucket_name: str) -> Finding:
    """Uniform bucket-level access, public access prevention enforced, versioning, noncurrent versions deleted."""
    name = "registry bucket"

    def run() -> Finding:
        bucket = storage_client.get_bucket(bucket_name)
        problems = []
        if not bucket.iam_configuration.uniform_bucket_level_access_enabled:
            problems.append("uniform bucket-level access is off")
        if bucket.iam_configuration.public_access_prevention != "enforced":
            problems.append(f"public access prevention is {bucket.iam_configuration.public_access_prevention!r}")
        if not bucket.versioning_enabled:
            problems.append("versioning is off")
        if not any(_deletes_noncurrent(rule) for rule in bucket.lifecycle_rules):
            problems.append("no lifecycle rule deletes noncurrent versions")
        if problems:
            return _fail(name, f"gs://{bucket_name}: {'; '.join(problems)}", PULUMI_UP)
        return _ok(name, f"gs://{bucket_name} hardened (uniform access, public access prevented, "
                   "versioned, old versions expire)")

    return _guarded(name, f"bucket gs://{bucket_name}", run)


def _deletes_noncurrent(rule: Mapping[str, Any]) -> bool:
    condition = rule.get("condition") or {}
    noncurrent = condition.get("isLive") is False or "daysSinceNoncurrentTime" in condition or (
        "numNewerVersions" in condition)
    return (rule.get("action") or {}).get("type") == "Delete" and noncurrent


# --- identities' roles --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policies:
    """The IAM policies the fleet's grants live in, as role -> members."""

    telemetry_topic: Mapping[str, frozenset[str]]
    monitor_subscription: Mapping[str, frozenset[str]]
    registry_bucket: Mapping[str, frozenset[str]]
    project: Mapping[str, frozenset[str]]


def conditioned_role(role: str, expression: str | None) -> str:
    """How a role granted under an IAM condition is told apart from the same role granted unconditionally."""
    return f"{role} if {expression}" if expression else role


def _condition_expression(binding: Any) -> str | None:
    condition = binding.get("condition") if isinstance(binding, Mapping) else getattr(binding, "condition", None)
    if not condition:
        return None
    return (condition.get("expression") if isinstance(condition, Mapping) else condition.expression) or None


def role_members(bindings: Iterable[Any]) -> dict[str, frozenset[str]]:
    """role -> members of a policy's bindings (protobuf `Binding`s or the storage client's dicts); a conditional
    binding's role is `conditioned_role(role, expression)`."""
    found: dict[str, set[str]] = {}
    for binding in bindings:
        role = binding["role"] if isinstance(binding, Mapping) else binding.role
        members = binding["members"] if isinstance(binding, Mapping) else binding.members
        found.setdefault(conditioned_role(role, _condition_expression(binding)), set()).update(members)
    return {role: frozenset(members) for role, members in found.items()}


def expected_role(grant: FleetGrant, outputs: StackOutputs) -> str:
    """The role as the program grants it: with its object-prefix condition when it has one, a Cloud SQL role with
    the condition naming the fleet state's instance."""
    if grant.role in FLEET_STATE_ROLES and outputs.fleet_state_connection_name:
        instance = outputs.fleet_state_connection_name.rsplit(":", 1)[-1]
        return conditioned_role(grant.role, cloudsql_instance_condition(outputs.project, instance))
    if grant.object_prefix is None:
        return grant.role
    return conditioned_role(grant.role, object_prefix_condition(outputs.registry_bucket, grant.object_prefix))


def read_policies(clients: CloudClients, outputs: StackOutputs) -> Policies:
    """Reads the four IAM policies (topic, subscription, bucket, project)."""
    subscription = f"projects/{outputs.project}/subscriptions/{outputs.monitor_subscription}"
    return Policies(
        telemetry_topic=role_members(
            clients.publisher.get_iam_policy(request={"resource": outputs.telemetry_topic_id}).bindings),
        monitor_subscription=role_members(
            clients.subscriber.get_iam_policy(request={"resource": subscription}).bindings),
        registry_bucket=role_members(
            clients.storage.bucket(outputs.registry_bucket).get_iam_policy(requested_policy_version=3).bindings),
        project=role_members(
            clients.projects.get_iam_policy(request={"resource": f"projects/{outputs.project}"}).bindings),
    )


def check_identity_roles(policies: Policies, outputs: StackOutputs,
                         grants: Sequence[FleetGrant] | None = None) -> list[Finding]:
    """One result per identity: it holds each of its grants (`fleet_grants` of the stack: the Cloud SQL ones with
    a fleet state), and no other role on those resources."""
    if grants is None:
        grants = fleet_grants(outputs.fleet_state_connection_name is not None)
    emails = {"device": outputs.device_service_account, "pipeline": outputs.pipeline_service_account,
              "monitor": outputs.monitor_service_account}
    results = []
    for identity, email in emails.items():
        who = member(email)
        expected = {(grant.on, expected_role(grant, outputs)) for grant in grants if grant.identity == identity}
        held = {(target, role) for target in ("telemetry_topic", "monitor_subscription", "registry_bucket", "project")
                for role, members in getattr(policies, target).items() if who in members}
        missing, extra = sorted(expected - held), sorted(held - expected)
        name = f"roles of {identity}"
        if missing or extra:
            parts = [f"missing {role} on the {target.replace('_', ' ')}" for target, role in missing]
            parts += [f"extra {role} on the {target.replace('_', ' ')}" for target, role in extra]
            fix = PULUMI_UP + (" and remove the extra grants (they are not the program's)" if extra else "")
            results.append(_fail(name, f"{email}: {'; '.join(parts)}", fix))
        else:
            results.append(_ok(name, f"{email}: {', '.join(role for _, role in sorted(expected))}"))
    return results


# --- dead-lettering ----------------------------------------------------------------------------------------


def check_dead_letter(subscriber: Any, publisher: Any, outputs: StackOutputs) -> Finding:
    """The monitor subscription dead-letters to the stack's topic after >= 5 attempts, and the Pub/Sub service
    agent may publish there and acknowledge on the subscription."""
    name = "dead-letter policy"
    subscription_path = f"projects/{outputs.project}/subscriptions/{outputs.monitor_subscription}"
    topic_path = f"projects/{outputs.project}/topics/{outputs.dead_letter_topic}"

    def run() -> Finding:
        subscription = subscriber.get_subscription(request={"subscription": subscription_path})
        policy = subscription.dead_letter_policy
        problems = []
        if policy.dead_letter_topic != topic_path:
            problems.append(f"dead-letters to {policy.dead_letter_topic or 'nothing'}, not {topic_path}")
        elif policy.max_delivery_attempts < MIN_DEAD_LETTER_ATTEMPTS:
            problems.append(f"max delivery attempts {policy.max_delivery_attempts} (Pub/Sub needs 5 to 100)")
        agent_publishes = any(PUBSUB_SERVICE_AGENT.match(m) for m in role_members(
            publisher.get_iam_policy(request={"resource": topic_path}).bindings).get(ROLE_PUBSUB_PUBLISHER, ()))
        agent_subscribes = any(PUBSUB_SERVICE_AGENT.match(m) for m in role_members(
            subscriber.get_iam_policy(request={"resource": subscription_path}).bindings).get(
                ROLE_PUBSUB_SUBSCRIBER, ()))
        if not agent_publishes:
            problems.append(f"the Pub/Sub service agent cannot publish to {outputs.dead_letter_topic}")
        if not agent_subscribes:
            problems.append(f"the Pub/Sub service agent cannot acknowledge on {outputs.monitor_subscription}")
        if problems:
            return _fail(name, f"{outputs.monitor_subscription}: {'; '.join(problems)}", PULUMI_UP)
        return _ok(name, f"{outputs.monitor_subscription} -> {outputs.dead_letter_topic} after "
                   f"{policy.max_delivery_attempts} attempts; the service agent can forward")

    return _guarded(name, f"subscription {subscription_path}", run)


# --- metric descriptors ------------------------------------------------------------------------------------


def check_metric_descriptors(metrics_client: Any, project: str) -> Finding:
    """Every custom metric the monitor writes has its descriptor."""
    name = "metric descriptors"

    def run() -> Finding:
        found = {descriptor.type for descriptor in metrics_client.list_metric_descriptors(request={
            "name": f"projects/{project}", "filter": f'metric.type = starts_with("{CUSTOM_METRIC_PREFIX}")'})}
        missing = sorted(set(METRICS_BY_TYPE) - found)
        if missing:
            return _fail(name, f"missing: {', '.join(_short_metric(m) for m in missing)}", PULUMI_UP)
        return _ok(name, f"all {len(METRICS_BY_TYPE)} of the fleet monitor's metrics")

    return _guarded(name, f"the metric descriptors of project {project}", run)


def _short_metric(metric_type: str) -> str:
    return re.sub(f"^{re.escape(CUSTOM_METRIC_PREFIX)}", "", metric_type)


# --- all of it ---------------------------------------------------------------------------------------------


def run_checks(clients: CloudClients, outputs: StackOutputs, sample: bytes | None = None) -> list[Finding]:
    """Every check, in the order a first deployment needs them."""
    results = [
        check_prerequisites(clients.service_usage, outputs.project),
        check_apis(clients.service_usage, outputs.project, bigquery=outputs.bigquery_table is not None,
                   x509_devices=outputs.device_workload_identity_provider is not None,
                   fleet_state=outputs.fleet_state_connection_name is not None),
        check_topic_schema(clients.publisher, clients.schemas, outputs,
                           sample if sample is not None else sample_telemetry()),
        check_bucket(clients.storage, outputs.registry_bucket),
    ]
    try:
        policies = read_policies(clients, outputs)
    except google_exceptions.GoogleAPICallError as error:
        results.append(_failed_call("roles", "the IAM policies of the topic, subscription, bucket and project", error))
    else:
        results += check_identity_roles(policies, outputs)
    results += [
        check_dead_letter(clients.subscriber, clients.publisher, outputs),
        check_metric_descriptors(clients.metrics, outputs.project),
    ]
    return results
