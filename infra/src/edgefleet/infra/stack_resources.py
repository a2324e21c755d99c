"""The stack's resources as the policy checks see them, read from `pulumi preview --json` or `pulumi stack export`.

`load_resources(path)` reads such a file, `resources_from_json` its parsed JSON, into `ResourceRecord`s (the unit
tests' mocks record the same); `iam_bindings` finds every (role, member) grant among them. Properties are the
provider's (camelCase) input names; a value Pulumi does not know yet at preview is `UNKNOWN`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from edgefleet.kernel.errors import ConfigError

UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # how Pulumi writes a value unknown at preview
_IAM_KIND = re.compile(r"(?i)iam(member|binding|policy)$")


class ResourceRecord(NamedTuple):
    """One resource as the checks see it.

    Attributes:
        type: Pulumi type token, e.g. `gcp:pubsub/topicIAMMember:TopicIAMMember`.
        name: Pulumi logical name.
        inputs: Its input properties (camelCase).
        protect: The `protect` option when known.
        parent: URN of its parent when known.
    """

    type: str
    name: str
    inputs: Mapping[str, Any]
    protect: bool | None = None
    parent: str | None = None


class Binding(NamedTuple):
    """One (role, member) grant found in an IAM resource."""

    resource: ResourceRecord
    role: str
    member: str

    @property
    def scope(self) -> str:
        """What the grant is on: the module of the IAM type, e.g. `pubsub/topicIAMMember`."""
        return self.resource.type.split(":")[1]

    @property
    def target(self) -> str:
        """The short name of the resource the grant is on (topic, subscription, bucket, table, project)."""
        for key in ("topic", "subscription", "bucket", "tableId", "datasetId", "project"):
            if key in self.resource.inputs:
                return short_name(str(self.resource.inputs[key]))
        return ""


def short_name(reference: str) -> str:
    """`projects/p/topics/t` -> `t`; a short name stays as it is."""
    return reference.rstrip("/").rsplit("/", 1)[-1]


def iam_bindings(resources: Iterable[ResourceRecord]) -> list[Binding]:
    """Every grant in IAM member, binding and policy resources (policies: their `policyData` JSON)."""
    found = []
    for record in resources:
        if not _IAM_KIND.search(record.type.rsplit(":", 1)[-1]):
            continue
        inputs = record.inputs
        if "member" in inputs:
            found.append(Binding(record, str(inputs.get("role", "")), str(inputs["member"])))
        for member in inputs.get("members", []) or []:
            found.append(Binding(record, str(inputs.get("role", "")), str(member)))
        policy = inputs.get("policyData")
        if isinstance(policy, str) and policy != UNKNOWN:
            for binding in json.loads(policy).get("bindings", []):
                for member in binding.get("members", []):
                    found.append(Binding(record, str(binding.get("role", "")), str(member)))
    return found


def resources_from_json(data: Mapping[str, Any]) -> list[ResourceRecord]:
    """Resources from `pulumi preview --json` (steps' `newState`) or `pulumi stack export` (deployment).

    Raises:
        ConfigError: when `data` is neither.
    """
    if "steps" in data:
        states = [step.get("newState") for step in data["steps"] if step.get("op") != "delete"]
    elif "deployment" in data:
        states = data["deployment"].get("resources", [])
    else:
        raise ConfigError(
            "this JSON is neither `pulumi preview --json` output nor `pulumi stack export`",
            "run `pulumi preview --json > preview.json` and check that file",
        )
    records = []
    for state in states:
        if not state or not state.get("custom", True):
            continue
        urn = state.get("urn", "")
        records.append(
            ResourceRecord(
                type=state.get("type", ""),
                name=urn.rsplit("::", 1)[-1],
                inputs=state.get("inputs") or {},
                protect=state.get("protect"),
                parent=state.get("parent"),
            )
        )
    return records


def load_resources(path: Path) -> list[ResourceRecord]:
    """Reads a `pulumi preview --json` or `pulumi stack export` file.

    Raises:
        ConfigError: naming the file when it is missing or not such JSON.
    """
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise ConfigError(f"{path} does not exist", "write it with `pulumi preview --json > FILE`") from error
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"{path} is not JSON ({error.msg} at line {error.lineno})",
            "write it with `pulumi preview --json > FILE` (no other output in the file)",
        ) from error
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a JSON object", "write it with `pulumi preview --json > FILE`")
    return resources_from_json(data)
