"""The stack's resources as the policy checks see them: read from a preview or an export, IAM grants found."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgefleet.infra.stack_resources import ResourceRecord, iam_bindings, load_resources, resources_from_json
from edgefleet.kernel.errors import ConfigError

TOPIC_MEMBER = "gcp:pubsub/topicIAMMember:TopicIAMMember"


def _state(name: str, type_: str = TOPIC_MEMBER, **extra: object) -> dict[str, object]:
    return {"urn": f"urn:pulumi:dev::edgefleet::{type_}::{name}", "type": type_, "inputs": {"topic": "t"}, **extra}


def test_a_preview_gives_the_new_states_of_custom_resources_not_deleted_ones() -> None:
    preview = {"steps": [
        {"op": "create", "newState": _state("kept", protect=True, parent="urn:parent")},
        {"op": "delete", "newState": _state("deleted")},
        {"op": "create", "newState": _state("component", custom=False)},
        {"op": "same"},
    ]}
    assert resources_from_json(preview) == [
        ResourceRecord(type=TOPIC_MEMBER, name="kept", inputs={"topic": "t"}, protect=True, parent="urn:parent")
    ]


def test_an_export_gives_the_deployments_resources() -> None:
    export = {"deployment": {"resources": [_state("a"), _state("b")]}}
    assert [record.name for record in resources_from_json(export)] == ["a", "b"]


def test_grants_are_found_in_members_member_lists_and_policy_json() -> None:
    policy = json.dumps({"bindings": [{"role": "roles/viewer", "members": ["user:a@x", "user:b@x"]}]})
    resources = [
        ResourceRecord(TOPIC_MEMBER, "one", {"topic": "projects/p/topics/t", "role": "r1", "member": "user:c@x"}),
        ResourceRecord("gcp:pubsub/topicIAMBinding:TopicIAMBinding", "list", {"role": "r2", "members": ["user:d@x"]}),
        ResourceRecord("gcp:pubsub/topicIAMPolicy:TopicIAMPolicy", "policy", {"policyData": policy}),
        ResourceRecord("gcp:pubsub/topic:Topic", "not-iam", {"role": "r3", "member": "user:e@x"}),
    ]
    found = [(binding.resource.name, binding.role, binding.member) for binding in iam_bindings(resources)]
    assert found == [("one", "r1", "user:c@x"), ("list", "r2", "user:d@x"),
                     ("policy", "roles/viewer", "user:a@x"), ("policy", "roles/viewer", "user:b@x")]
    assert iam_bindings(resources)[0].target == "t"


def test_policy_input_that_is_not_a_preview_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps({"project": "p"}))
    with pytest.raises(ConfigError, match="pulumi preview --json"):
        load_resources(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_resources(tmp_path / "missing.json")
