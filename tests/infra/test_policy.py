"""Policy checks: each one catches the violation it is for, on the program's own resources made wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgefleet.cli import app
from edgefleet.infra.policy import (
    ALL_CHECKS,
    check_all,
    check_buckets_hardened,
    check_dead_letter,
    check_monitoring_metrics_written,
    check_no_primitive_roles,
    check_no_public_access,
    check_project_roles,
)
from edgefleet.infra.stack_resources import ResourceRecord, load_resources
from edgefleet.kernel.contracts import layout
from edgefleet.kernel.findings import Status, parse_findings
from tests.infra.support.testing import StackRun


def _changed(stack: StackRun, name: str, **inputs: object) -> list[ResourceRecord]:
    """The stack's resources with resource `name`'s inputs updated (None removes a key)."""
    out = []
    for record in stack.resources:
        if record.name == name:
            merged = {**record.inputs, **inputs}
            record = record._replace(
                inputs={key: value for key, value in merged.items() if value is not None}
            )
        out.append(record)
    return out


def _iam(name: str, kind: str, role: str, member: str, **target: str) -> ResourceRecord:
    return ResourceRecord(type=kind, name=name, inputs={"role": role, "member": member, **target})


def test_the_program_passes_every_check(default_stack: StackRun) -> None:
    assert check_all(default_stack.resources) == []


def test_public_members_are_caught_in_members_acls_and_policies(default_stack: StackRun) -> None:
    resources = list(default_stack.resources) + [
        _iam(
            "leak",
            "gcp:storage/bucketIAMMember:BucketIAMMember",
            "roles/storage.objectViewer",
            "allUsers",
            bucket="b",
        ),
        ResourceRecord(
            "gcp:storage/bucketACL:BucketACL", "acl", {"roleEntities": ["READER:allAuthenticatedUsers"]}
        ),
        ResourceRecord(
            "gcp:pubsub/topicIAMPolicy:TopicIAMPolicy",
            "policy",
            {
                "topic": "t",
                "policyData": json.dumps(
                    {"bindings": [{"role": "roles/pubsub.publisher", "members": ["allUsers"]}]}
                ),
            },
        ),
    ]
    assert {violation.resource for violation in check_no_public_access(resources)} == {
        "leak",
        "acl",
        "policy",
    }


def test_primitive_roles_are_caught(default_stack: StackRun) -> None:
    resources = _changed(default_stack, "edgefleet-pipeline-writes-registry", role="roles/editor")
    [violation] = check_no_primitive_roles(resources)
    assert violation.resource == "edgefleet-pipeline-writes-registry"
    assert "roles/editor" in violation.message


def test_project_wide_grants_other_than_metric_writing_are_caught(default_stack: StackRun) -> None:
    resources = _changed(default_stack, "edgefleet-monitor-writes-metrics", role="roles/pubsub.subscriber")
    [violation] = check_project_roles(resources)
    assert violation.resource == "edgefleet-monitor-writes-metrics"


@pytest.mark.parametrize(
    ("inputs", "problem"),
    [
        ({"uniformBucketLevelAccess": False}, "uniformBucketLevelAccess"),
        ({"publicAccessPrevention": "inherited"}, "publicAccessPrevention"),
        ({"versioning": None}, "versioning"),
        ({"lifecycleRules": []}, "noncurrent"),
    ],
)
def test_soft_buckets_are_caught(default_stack: StackRun, inputs: dict[str, object], problem: str) -> None:
    [violation] = check_buckets_hardened(_changed(default_stack, "edgefleet-bucket", **inputs))
    assert problem in violation.message


def test_an_unprotected_bucket_is_caught(default_stack: StackRun) -> None:
    resources = [
        record._replace(protect=False) if record.name == "edgefleet-bucket" else record
        for record in default_stack.resources
    ]
    [violation] = check_buckets_hardened(resources)
    assert "protect" in violation.message


def test_a_subscription_without_dead_lettering_is_caught(default_stack: StackRun) -> None:
    resources = _changed(default_stack, "edgefleet-monitor-subscription", deadLetterPolicy=None)
    violations = {violation.resource: violation.message for violation in check_dead_letter(resources)}
    assert "no dead-letter policy" in violations["edgefleet-monitor-subscription"]
    # With no subscription pointing at it, the dead-letter topic is an ordinary topic: its subscription is
    # flagged as well.
    assert set(violations) == {"edgefleet-monitor-subscription", "edgefleet-dead-letter-subscription"}


def test_too_few_attempts_are_caught(default_stack: StackRun) -> None:
    policy = {"deadLetterTopic": layout.TELEMETRY_DEAD_LETTER_TOPIC, "maxDeliveryAttempts": 2}
    [violation] = check_dead_letter(
        _changed(default_stack, "edgefleet-monitor-subscription", deadLetterPolicy=policy)
    )
    assert "5 to 100" in violation.message


@pytest.mark.parametrize(
    ("grant", "what"),
    [
        ("edgefleet-dead-letter-publisher", "roles/pubsub.publisher on this dead-letter topic"),
        ("edgefleet-monitor-subscription-agent", "roles/pubsub.subscriber on this subscription"),
    ],
)
def test_missing_service_agent_grants_are_caught(default_stack: StackRun, grant: str, what: str) -> None:
    resources = [record for record in default_stack.resources if record.name != grant]
    [violation] = check_dead_letter(resources)
    assert what in violation.message


def test_a_new_stacks_preview_with_the_agent_email_unknown_passes(default_stack: StackRun) -> None:
    """On a fresh project the agent's email comes from its ServiceIdentity and is unknown at preview."""
    from edgefleet.infra.stack_resources import UNKNOWN

    resources = [
        record._replace(inputs={**record.inputs, "member": UNKNOWN})
        if record.type.endswith("IAMMember") and "gcp-sa-pubsub" in str(record.inputs["member"]) else record
        for record in default_stack.resources
    ]
    assert sum(record.inputs.get("member") == UNKNOWN for record in resources) == 2
    assert check_dead_letter(resources) == []


def test_a_chart_of_a_metric_nobody_writes_is_caught(default_stack: StackRun) -> None:
    [dashboard] = default_stack.of_type("Dashboard")
    text = dashboard.inputs["dashboardJson"].replace("edgefleet/device/uptime", "edgefleet/device/uptime_s")
    [violation] = check_monitoring_metrics_written(
        _changed(default_stack, dashboard.name, dashboardJson=text)
    )
    assert "custom.googleapis.com/edgefleet/device/uptime_s" in violation.message


def _preview(stack: StackRun) -> dict[str, object]:
    """`pulumi preview --json` as the CLI writes it for a new stack (steps with their new states)."""
    return {
        "steps": [
            {
                "op": "create",
                "urn": f"urn:pulumi:dev::edgefleet::{record.type}::{record.name}",
                "newState": {
                    "urn": f"urn:pulumi:dev::edgefleet::{record.type}::{record.name}",
                    "custom": record.type.startswith("gcp:"),
                    "type": record.type,
                    "inputs": dict(record.inputs),
                    "protect": record.protect,
                },
            }
            for record in stack.resources
        ],
        "changeSummary": {"create": len(stack.resources)},
    }


def test_check_policy_command_passes_a_clean_preview_and_fails_a_bad_one(
    default_stack: StackRun, tmp_path: Path
) -> None:
    clean = tmp_path / "preview.json"
    clean.write_text(json.dumps(_preview(default_stack)))
    assert len(load_resources(clean)) == len(
        [r for r in default_stack.resources if r.type.startswith("gcp:")]
    )
    result = CliRunner().invoke(app, ["config", "check-policy", str(clean)])
    assert result.exit_code == 0, result.output

    bad = StackRun(
        resources=_changed(default_stack, "edgefleet-device-reads-registry", member="allUsers"), outputs={}
    )
    dirty = tmp_path / "bad.json"
    dirty.write_text(json.dumps(_preview(bad)))
    result = CliRunner().invoke(app, ["config", "check-policy", str(dirty)])
    assert result.exit_code == 1
    assert "edgefleet-device-reads-registry" in result.output and "allUsers" in result.output


def test_check_policy_json_is_one_finding_per_policy_or_violation(default_stack: StackRun, tmp_path: Path) -> None:
    clean = tmp_path / "preview.json"
    clean.write_text(json.dumps(_preview(default_stack)))
    result = CliRunner().invoke(app, ["config", "check-policy", str(clean), "--json"])
    assert result.exit_code == 0, result.output
    findings = parse_findings(result.stdout)
    assert [(f.name, f.status) for f in findings] == [(name, Status.OK) for name in ALL_CHECKS]

    bad = StackRun(
        resources=_changed(default_stack, "edgefleet-device-reads-registry", member="allUsers"), outputs={}
    )
    dirty = tmp_path / "bad.json"
    dirty.write_text(json.dumps(_preview(bad)))
    result = CliRunner().invoke(app, ["config", "check-policy", str(dirty), "--json"])
    assert result.exit_code == 1
    [violation] = [f for f in parse_findings(result.stdout) if f.status is not Status.OK]
    assert (violation.name, violation.status) == ("no-public-access", Status.FAIL)
    assert violation.detail.startswith("edgefleet-device-reads-registry: ") and "allUsers" in violation.detail
