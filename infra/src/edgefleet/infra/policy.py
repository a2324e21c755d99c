"""Policy checks over the program's resources: plain functions a user can run in CI.

Feed them the resources of `pulumi preview --json` (new stack states) or `pulumi stack export` (the
deployment), read with `load_resources(path)` (edgefleet.infra.stack_resources), or the resources the unit
tests' mocks recorded. Each check returns the violations it found (empty when the stack complies); `check_all`
runs every one, `policy_findings` says the same as findings (edgefleet.kernel.findings). From the CLI:
`edgefleet config check-policy preview.json [--json]` (exit status 1 on any violation).

Properties are the provider's (camelCase) input names. A value Pulumi does not know yet at preview (shown
as its unknown marker) is not guessed at: a check that needs it reports it as unverifiable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from edgefleet.infra.dashboard import BUILTIN_METRICS, metric_types_in
from edgefleet.infra.names import (
    FLEET_STATE_ROLES,
    ROLE_MONITORING_METRIC_WRITER,
    ROLE_PUBSUB_PUBLISHER,
    ROLE_PUBSUB_SUBSCRIBER,
)
from edgefleet.infra.stack_resources import UNKNOWN, ResourceRecord, iam_bindings, short_name
from edgefleet.infra.stack_resources import load_resources as load_resources  # `edgefleet config check-policy`'s
from edgefleet.kernel.findings import Finding, Status
from edgefleet.kernel.metrics import METRICS_BY_TYPE

PUBLIC_MEMBERS = frozenset({"allUsers", "allAuthenticatedUsers"})
PRIMITIVE_ROLES = frozenset({"roles/owner", "roles/editor", "roles/viewer"})
PROJECT_ROLES_ALLOWED = frozenset({ROLE_MONITORING_METRIC_WRITER})
# Cloud SQL has no instance-level IAM: its roles are bound on the project, allowed only with an IAM condition
# (the program's names the fleet state's instance).
PROJECT_ROLES_CONDITIONED = FLEET_STATE_ROLES
MIN_DEAD_LETTER_ATTEMPTS = 5
PUBSUB_SERVICE_AGENT = re.compile(r"^serviceAccount:service-\d+@gcp-sa-pubsub\.iam\.gserviceaccount\.com$")

BUCKET = "gcp:storage/bucket:Bucket"
SUBSCRIPTION = "gcp:pubsub/subscription:Subscription"
TOPIC_IAM_MEMBER = "gcp:pubsub/topicIAMMember:TopicIAMMember"
SUBSCRIPTION_IAM_MEMBER = "gcp:pubsub/subscriptionIAMMember:SubscriptionIAMMember"
DASHBOARD = "gcp:monitoring/dashboard:Dashboard"
ALERT_POLICY = "gcp:monitoring/alertPolicy:AlertPolicy"


class Violation(NamedTuple):
    """A policy violation: which check, which resource, what is wrong (and how to fix it)."""

    check: str
    resource: str
    message: str

    def __str__(self) -> str:
        return f"[{self.check}] {self.resource}: {self.message}"

    def finding(self) -> Finding:
        """The violation as a failed check (`edgefleet config check-policy`'s line); its message says the fix."""
        return Finding(name=self.check, status=Status.FAIL, detail=f"{self.resource}: {self.message}")


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def check_no_public_access(resources: Sequence[ResourceRecord]) -> list[Violation]:
    """No `allUsers` / `allAuthenticatedUsers` anywhere: IAM members, ACL entries, policies."""
    violations = []
    for record in resources:
        public = sorted({text for text in _strings(record.inputs) for name in PUBLIC_MEMBERS if name in text})
        if public:
            violations.append(
                Violation(
                    "no-public-access",
                    record.name,
                    f"grants access to {', '.join(public)}; remove that member",
                )
            )
    return violations


def check_no_primitive_roles(resources: Sequence[ResourceRecord]) -> list[Violation]:
    """No owner/editor/viewer grant, on anything."""
    return [
        Violation(
            "no-primitive-roles",
            binding.resource.name,
            f"grants primitive role {binding.role} to {binding.member}; grant a predefined role on the "
            "resource instead",
        )
        for binding in iam_bindings(resources)
        if binding.role in PRIMITIVE_ROLES
    ]


def check_project_roles(
    resources: Sequence[ResourceRecord], allowed: frozenset[str] = PROJECT_ROLES_ALLOWED
) -> list[Violation]:
    """Project-wide grants only for the roles in `allowed` (those with no narrower resource)."""
    return [
        Violation(
            "project-roles",
            binding.resource.name,
            f"grants {binding.role} on the whole project to {binding.member}; bind it on the topic, "
            "subscription or bucket instead",
        )
        for binding in iam_bindings(resources)
        if binding.scope.startswith("projects/") and binding.role not in allowed
        and not (binding.role in PROJECT_ROLES_CONDITIONED and binding.resource.inputs.get("condition"))
    ]


def check_buckets_hardened(resources: Sequence[ResourceRecord]) -> list[Violation]:
    """Every bucket: uniform bucket-level access, public access prevention enforced, versioning, a lifecycle
    rule deleting noncurrent versions, and `protect` (when the source records options)."""
    violations = []
    for record in resources:
        if record.type != BUCKET:
            continue
        inputs = record.inputs
        problems = []
        if inputs.get("uniformBucketLevelAccess") is not True:
            problems.append("uniformBucketLevelAccess is not true (object ACLs could grant access)")
        if inputs.get("publicAccessPrevention") != "enforced":
            problems.append("publicAccessPrevention is not 'enforced'")
        if (inputs.get("versioning") or {}).get("enabled") is not True:
            problems.append("versioning is not enabled")
        if not any(_deletes_noncurrent(rule) for rule in inputs.get("lifecycleRules", []) or []):
            problems.append("no lifecycle rule deletes noncurrent versions")
        if record.protect is False:
            problems.append("protect is off (pulumi destroy would delete it)")
        violations += [Violation("bucket-hardened", record.name, problem) for problem in problems]
    return violations


def _deletes_noncurrent(rule: Mapping[str, Any]) -> bool:
    condition = rule.get("condition") or {}
    noncurrent = (
        condition.get("withState") == "ARCHIVED"
        or "daysSinceNoncurrentTime" in condition
        or "noncurrentTimeBefore" in condition
    )
    return (rule.get("action") or {}).get("type") == "Delete" and noncurrent


def check_dead_letter(resources: Sequence[ResourceRecord]) -> list[Violation]:
    """Every subscription (except those on dead-letter topics) has a dead-letter policy with at least 5
    attempts, and the Pub/Sub service agent may publish to each dead-letter topic and subscribe to each
    dead-lettered subscription (without both, Pub/Sub cannot dead-letter)."""
    subscriptions = [record for record in resources if record.type == SUBSCRIPTION]
    dead_letter_topics = _dead_letter_topics(subscriptions)
    agent_grants = _service_agent_grants(resources)
    violations = [
        violation
        for record in subscriptions
        if short_name(str(record.inputs.get("topic", ""))) not in dead_letter_topics
        for violation in _subscription_dead_lettering(record, agent_grants)
    ]
    return violations + [
        violation for topic in sorted(dead_letter_topics) for violation in _dead_letter_topic_grant(topic, agent_grants)
    ]


Grant = tuple[str, str, str]  # (IAM scope, role, short name of the resource), as `Binding` has them


def _dead_letter_topics(subscriptions: Sequence[ResourceRecord]) -> set[str]:
    """The short names of the topics the subscriptions' dead-letter policies name."""
    return {
        short_name(str((record.inputs.get("deadLetterPolicy") or {}).get("deadLetterTopic")))
        for record in subscriptions
        if record.inputs.get("deadLetterPolicy")
    }


def _service_agent_grants(resources: Sequence[ResourceRecord]) -> set[Grant]:
    """Every grant to the Pub/Sub service agent.

    On a new stack the agent's email comes from its ServiceIdentity, unknown at preview: a grant to an
    unknown member is taken as the agent's (later previews, and `edgefleet cloud check`, see the real one).
    """
    return {
        (binding.scope, binding.role, binding.target)
        for binding in iam_bindings(resources)
        if PUBSUB_SERVICE_AGENT.match(binding.member) or binding.member == UNKNOWN
    }


def _subscription_dead_lettering(record: ResourceRecord, agent_grants: set[Grant]) -> list[Violation]:
    """One subscription: its dead-letter policy, its attempts, and the agent's subscriber grant on it."""
    policy = record.inputs.get("deadLetterPolicy")
    if not policy:
        return [Violation("dead-letter", record.name, "no dead-letter policy: a message that "
                          "cannot be processed is redelivered until it expires")]
    violations = []
    attempts = policy.get("maxDeliveryAttempts")
    # JSON (and Pulumi's protobuf structs) may carry integers as floats: 5.0.
    if not isinstance(attempts, int | float) or attempts < MIN_DEAD_LETTER_ATTEMPTS:
        violations.append(
            Violation("dead-letter", record.name, f"maxDeliveryAttempts is {attempts!r}; Pub/Sub needs 5 to 100")
        )
    name = short_name(str(record.inputs.get("name", record.name)))
    if name == UNKNOWN:
        violations.append(Violation("dead-letter", record.name, "name unknown at preview: unverifiable"))
    elif ("pubsub/subscriptionIAMMember", ROLE_PUBSUB_SUBSCRIBER, name) not in agent_grants:
        violations.append(Violation(
            "dead-letter", record.name, "the Pub/Sub service agent has no roles/pubsub.subscriber on this subscription"
        ))
    return violations


def _dead_letter_topic_grant(topic: str, agent_grants: set[Grant]) -> list[Violation]:
    """One dead-letter topic: the agent's publisher grant on it."""
    if topic == UNKNOWN:
        return [Violation("dead-letter", topic, "dead-letter topic unknown at preview: unverifiable")]
    if ("pubsub/topicIAMMember", ROLE_PUBSUB_PUBLISHER, topic) not in agent_grants:
        return [Violation(
            "dead-letter", topic, "the Pub/Sub service agent has no roles/pubsub.publisher on this dead-letter topic"
        )]
    return []


METRIC_DESCRIPTOR = "gcp:monitoring/metricDescriptor:MetricDescriptor"
# MetricDescriptor.unit grammar (https://cloud.google.com/monitoring/api/ref_v3/rest/v3/projects.metricDescriptors):
# basic units bit By s min h d 1, optional SI or binary prefixes, `.` and `/` between components, `{...}`
# annotations (alone they mean 1), and `%`.
_UNIT_PREFIX = r"(?:k|M|G|T|P|E|Z|Y|m|u|n|p|f|a|z|y|Ki|Mi|Gi|Ti|Pi|Ei|Zi|Yi)?"
_UNIT_COMPONENT = rf"(?:(?:{_UNIT_PREFIX}(?:bit|By|s|min|h|d)|1)(?:\{{[^{{}}]+\}})?|\{{[^{{}}]+\}})"
METRIC_UNIT = re.compile(rf"^(?:%|10\^2\.%|{_UNIT_COMPONENT}(?:[./]{_UNIT_COMPONENT})*)$")


def check_metric_units(resources: Sequence[ResourceRecord]) -> list[Violation]:
    """Every metric descriptor's unit is in Cloud Monitoring's documented unit grammar."""
    return [
        Violation(
            "metric-units",
            record.name,
            f"unit {record.inputs.get('unit')!r} is not in Cloud Monitoring's documented units (bit, By, s, "
            "min, h, d, 1 with prefixes, '.', '/', '%' and {annotations}); e.g. write Celsius as '{Cel}'",
        )
        for record in resources
        if record.type == METRIC_DESCRIPTOR
        and "unit" in record.inputs
        and not METRIC_UNIT.match(str(record.inputs["unit"]))
    ]


def monitoring_metric_types(resources: Sequence[ResourceRecord]) -> dict[str, set[str]]:
    """Resource name -> every metric type its dashboard JSON or alert conditions name in their filters."""
    found: dict[str, set[str]] = {}
    for record in resources:
        if record.type == DASHBOARD:
            text = record.inputs.get("dashboardJson", "{}")
            tree = json.loads(text) if isinstance(text, str) and text != UNKNOWN else {}
        elif record.type == ALERT_POLICY:
            tree = record.inputs.get("conditions", [])
        else:
            continue
        found[record.name] = {metric for text in _strings(tree) for metric in metric_types_in(text)}
    return found


def check_monitoring_metrics_written(resources: Sequence[ResourceRecord]) -> list[Violation]:
    """Dashboards and alerts name only metrics the fleet monitor writes or built-in Pub/Sub metrics."""
    known = set(METRICS_BY_TYPE) | BUILTIN_METRICS
    return [
        Violation(
            "metrics-written",
            name,
            f"refers to {metric}, which nobody writes (not in "
            "edgefleet.kernel.metrics.ALL_METRICS nor a built-in Pub/Sub metric)",
        )
        for name, metrics in monitoring_metric_types(resources).items()
        for metric in sorted(metrics - known)
    ]


# Every policy by the name its violations carry (`Violation.check`).
ALL_CHECKS: Mapping[str, Callable[[Sequence[ResourceRecord]], list[Violation]]] = {
    "no-public-access": check_no_public_access,
    "no-primitive-roles": check_no_primitive_roles,
    "project-roles": check_project_roles,
    "bucket-hardened": check_buckets_hardened,
    "dead-letter": check_dead_letter,
    "metrics-written": check_monitoring_metrics_written,
    "metric-units": check_metric_units,
}


def check_all(resources: Sequence[ResourceRecord]) -> list[Violation]:
    """Runs every check; returns all violations."""
    return [violation for check in ALL_CHECKS.values() for violation in check(resources)]


def policy_findings(resources: Sequence[ResourceRecord]) -> list[Finding]:
    """Every policy as findings: one failed finding per violation, one ok finding for a policy none violates."""
    findings: list[Finding] = []
    for name, check in ALL_CHECKS.items():
        violations = check(resources)
        findings += [violation.finding() for violation in violations] or [
            Finding(name=name, status=Status.OK, detail=f"{len(resources)} resources comply")]
    return findings
