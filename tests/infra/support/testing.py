"""Unit-test harness for the Pulumi program: Pulumi's mocks (`pulumi.runtime.set_mocks`), realistic outputs.

The Pulumi CLI and the GCP provider plugin cannot run here, so the program runs against Pulumi's mock
engine. `GcpMocks` stands in for the provider: it returns what the GCP provider returns for each resource
(ids in Google's formats, service account emails `<id>@<project>.iam.gserviceaccount.com`, bucket URLs...)
and answers the `getProject` invoke with a project number (the program itself no longer calls it).
`RecordingMonitor` is Pulumi's `MockMonitor`
that also keeps what the engine would receive in each registration (`protect`, `parent`), which the
provider-level mocks never see. Each `run_program` call is a fresh, isolated program (new mocks, new
monitor). Used by tests/infra (test support, not installed with edgefleet-infra).
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.runtime import settings
from pulumi.runtime.mocks import MockMonitor

from edgefleet.infra.config import InfraConfig
from edgefleet.infra.stack_config import config_from_values
from edgefleet.infra.stack_resources import ResourceRecord

PROJECT = "edgefleet-prod-42"
PROJECT_NUMBER = "731894265013"


def _short(token: str) -> str:
    return token.rsplit(":", 1)[-1]


class GcpMocks(pulumi.runtime.Mocks):
    """Stands in for the GCP provider: returns each resource's inputs plus the outputs Google computes."""

    def __init__(self, project_number: str = PROJECT_NUMBER) -> None:
        self.project_number = project_number
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        state = dict(args.inputs)
        if not args.custom:
            return None, state  # component resources have no provider state
        project = state.get("project", PROJECT)
        kind = _short(args.typ)
        resource_id = f"{args.name}-{uuid.uuid4().hex[:8]}"
        if kind == "Account":
            email = f"{state['accountId']}@{project}.iam.gserviceaccount.com"
            resource_id = f"projects/{project}/serviceAccounts/{email}"
            state.update(
                email=email,
                name=resource_id,
                member=f"serviceAccount:{email}",
                uniqueId=str(10**20 + len(email)),
            )
        elif kind in ("Topic", "Subscription", "Schema"):
            collection = {"Topic": "topics", "Subscription": "subscriptions", "Schema": "schemas"}[kind]
            resource_id = f"projects/{project}/{collection}/{state['name']}"
        elif kind == "Bucket":
            resource_id = state["name"]
            state.update(
                url=f"gs://{state['name']}",
                selfLink=f"https://www.googleapis.com/storage/v1/b/{state['name']}",
            )
        elif kind == "Dashboard":
            resource_id = f"projects/{self.project_number}/dashboards/{uuid.uuid4()}"
        elif kind in ("AlertPolicy", "MetricDescriptor"):
            suffix = state["type"] if kind == "MetricDescriptor" else str(uuid.uuid4().int)[:19]
            collection = "metricDescriptors" if kind == "MetricDescriptor" else "alertPolicies"
            resource_id = f"projects/{project}/{collection}/{suffix}"
            state["name"] = resource_id
        elif kind == "Service":
            resource_id = f"{project}/{state['service']}"
        elif kind == "ServiceIdentity":
            # What generateServiceIdentity returns for Pub/Sub: the per-project service agent.
            agent = state["service"].split(".", 1)[0]
            email = f"service-{self.project_number}@gcp-sa-{agent}.iam.gserviceaccount.com"
            resource_id = f"projects/{project}/services/{state['service']}"
            state.update(email=email, member=f"serviceAccount:{email}")
        elif kind == "Sleep":  # pulumiverse-time: the id is the creation time (RFC 3339)
            resource_id = "2026-01-01T00:00:00Z"
        elif kind == "WorkloadIdentityPool":  # the API names pools by project number
            resource_id = (f"projects/{self.project_number}/locations/global/workloadIdentityPools/"
                           f"{state['workloadIdentityPoolId']}")
            state.update(name=resource_id, state="ACTIVE")
        elif kind == "WorkloadIdentityPoolProvider":
            resource_id = (f"projects/{self.project_number}/locations/global/workloadIdentityPools/"
                           f"{state['workloadIdentityPoolId']}/providers/{state['workloadIdentityPoolProviderId']}")
            state.update(name=resource_id, state="ACTIVE")
        elif kind == "DatabaseInstance":  # Cloud SQL computes the connection name (project:region:instance)
            resource_id = state["name"]
            state.update(connectionName=f"{project}:{state['region']}:{state['name']}",
                         selfLink=f"https://sqladmin.googleapis.com/sql/v1beta4/projects/{project}/instances/"
                         f"{state['name']}")
        elif kind == "Dataset":
            resource_id = f"projects/{project}/datasets/{state['datasetId']}"
        elif kind == "Table":
            resource_id = f"projects/{project}/datasets/{state['datasetId']}/tables/{state['tableId']}"
        elif kind.upper().endswith("IAMMEMBER"):
            target = next(
                (
                    str(state[key])
                    for key in ("topic", "subscription", "bucket", "tableId", "project")
                    if key in state
                ),
                project,
            )
            resource_id = f"{target}/{state['role']}/{state['member']}"
            state["etag"] = "BwYk1Yr6vWc="
        return resource_id, state

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        self.calls.append((args.token, dict(args.args)))
        if args.token == "gcp:organizations/getProject:getProject":
            project_id = args.args.get("projectId", PROJECT)
            return {
                "projectId": project_id,
                "number": self.project_number,
                "name": project_id,
                "id": f"projects/{project_id}",
            }
        raise NotImplementedError(f"the program made an invoke the mocks do not know: {args.token}")


class RecordingMonitor(MockMonitor):
    """Pulumi's mock monitor, also keeping each registration's resource options."""

    def __init__(self, mocks: pulumi.runtime.Mocks) -> None:
        super().__init__(mocks)
        self.options: dict[tuple[str, str], dict[str, Any]] = {}

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 (the gRPC method name)
        response = super().RegisterResource(request)
        self.options[(request.type, request.name)] = {
            "protect": request.protect,
            "parent": request.parent,
            "urn": response.urn,
            "dependencies": list(request.dependencies),
        }
        return response


@dataclass
class StackRun:
    """What one run of the program registered and exported."""

    resources: list[ResourceRecord]
    outputs: dict[str, Any]
    urns: dict[tuple[str, str], str] = field(default_factory=dict)
    dependencies: dict[str, set[str]] = field(default_factory=dict)  # URN -> URNs it waits for
    invokes: list[str] = field(default_factory=list)  # tokens of the provider functions it called

    def urn(self, record: ResourceRecord) -> str:
        return self.urns[(record.type, record.name)]

    def depends_on(self, record: ResourceRecord, other: ResourceRecord) -> bool:
        """Whether `record` waits for `other`, directly or through other resources."""
        target, seen, todo = self.urn(other), set(), [self.urn(record)]
        while todo:
            for urn in self.dependencies.get(todo.pop(), set()) - seen:
                if urn == target:
                    return True
                seen.add(urn)
                todo.append(urn)
        return False

    def of_type(self, kind: str) -> list[ResourceRecord]:
        """Resources whose type token ends with `:<kind>` (e.g. "TopicIAMMember")."""
        return [record for record in self.resources if _short(record.type) == kind]

    def named(self, kind: str, name: str) -> ResourceRecord:
        """The one resource of `kind` whose `name` input is `name`."""
        matches = [record for record in self.of_type(kind) if record.inputs.get("name") == name]
        if len(matches) != 1:
            raise LookupError(f"{len(matches)} {kind} named {name!r}")
        return matches[0]


def run_program(
    program: Callable[[], dict[str, pulumi.Input]],
    config: dict[str, str] | None = None,
    preview: bool = False,
) -> StackRun:
    """Runs `program` (returning its outputs) under fresh mocks; returns what it registered and exported."""
    mocks = GcpMocks()
    monitor = RecordingMonitor(mocks)
    settings.set_root_resource(None)  # a fresh root stack: exports of an earlier run do not leak in
    pulumi.runtime.set_mocks(mocks, project="edgefleet", stack="test", preview=preview, monitor=monitor)
    pulumi.runtime.set_all_config(dict(config or {}))
    outputs: dict[str, Any] = {}

    @pulumi.runtime.test
    def run() -> pulumi.Output:
        exported = program()
        return pulumi.Output.all(
            **{key: pulumi.Output.from_input(value) for key, value in exported.items()}
        ).apply(outputs.update)

    run()
    resources = []
    urns = {}
    dependencies = {}
    for registration in monitor.resources.values():
        kind = registration.urn.rsplit("::", 2)[-2].split("$")[-1]
        name = registration.urn.rsplit("::", 1)[-1]
        options = monitor.options.get((kind, name), {})
        resources.append(
            ResourceRecord(
                type=kind,
                name=name,
                inputs=json.loads(json.dumps(registration.state)),
                protect=options.get("protect"),
                parent=options.get("parent") or None,
            )
        )
        urns[(kind, name)] = registration.urn
        dependencies[registration.urn] = set(options.get("dependencies", []))
    return StackRun(
        resources=resources,
        outputs=outputs,
        urns=urns,
        dependencies=dependencies,
        invokes=[token for token, _ in mocks.calls],
    )


NOTIFICATION_CHANNEL = f"projects/{PROJECT}/notificationChannels/4417902351"


@functools.cache
def fleet_ca_pem(common_name: str = "edgefleet test fleet CA") -> str:
    """A self-signed CA certificate (PEM), standing in for the fleet CA that signs device certificates."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def base_values() -> dict[str, Any]:
    """What every test stack sets besides its overrides: the project, where alerts go, the fleet CA."""
    return {
        "project": PROJECT,
        "alerts": {"notificationChannels": [NOTIFICATION_CHANNEL]},
        "devices": {"trustAnchors": [fleet_ca_pem()]},
    }


def pulumi_config(**values: str) -> dict[str, str]:
    """The base values as Pulumi stores them (`edgefleet:alerts` -> JSON text), plus `values` (`edgefleet:...`)."""
    base = {f"edgefleet:{key}": value if isinstance(value, str) else json.dumps(value)
            for key, value in base_values().items()}
    return {**base, **values}


def stack_config(**values: Any) -> InfraConfig:
    """An InfraConfig for PROJECT with optional overrides given as Pulumi config values (a grouped key's fields
    are merged into the base values' fields; `None` removes a key)."""
    raw = base_values()
    for key, value in values.items():
        if value is None:
            raw.pop(key, None)
        elif isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return config_from_values(
        {key: value if isinstance(value, str) else json.dumps(value) for key, value in raw.items()})
