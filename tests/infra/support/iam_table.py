"""Google Cloud API methods -> the IAM permissions they need, and the permissions of the roles the program grants.

The IAM conformance test (tests/infra/test_policy_iam_conformance.py) records every API method each identity's code
calls against the emulators, looks each one up here and checks the Pulumi program grants that identity a role
holding the permission on that resource. A method that is recorded but missing here fails that test with a
message naming it: add its row with the permission from Google's reference and the reference's address.

Method names: gRPC methods as `package.Service/Method` (what a client interceptor sees, e.g.
`google.pubsub.v1.Publisher/Publish`); Cloud Storage JSON API methods by their API name (`storage.objects.get`),
with `storage.objects.insert[overwrite]` for an upload that may replace a live object (no `ifGenerationMatch=0`).

Test support (not installed with edgefleet-infra: nothing in the program or the CLI reads it). No Pulumi import.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

ResourceKind = Literal["topic", "subscription", "schema", "bucket", "project", "crypto_key"]

PUBSUB_METHODS = "https://cloud.google.com/pubsub/docs/access-control#required_permissions"
STORAGE_METHODS = "https://cloud.google.com/storage/docs/access-control/iam-json"
MONITORING_METHODS = "https://cloud.google.com/monitoring/access-control#api-methods"
KMS_METHODS = "https://cloud.google.com/kms/docs/reference/permissions-and-roles"
PUBSUB_ROLES = "https://cloud.google.com/iam/docs/roles-permissions/pubsub"
STORAGE_ROLES = "https://cloud.google.com/iam/docs/roles-permissions/storage"
MONITORING_ROLES = "https://cloud.google.com/iam/docs/roles-permissions/monitoring"


class MethodPermission(NamedTuple):
    """What one API method needs.

    Attributes:
        method: `package.Service/Method` (gRPC) or the JSON API method name.
        permissions: Every permission it needs, all on `resource`.
        resource: The kind of resource the permission is checked on (the one the request names).
        source: Google's reference the row comes from.
        denial_tolerated: Why the caller carries on when the permission is denied (a library's best-effort
            call); empty for calls the code needs. Such a call is recorded but needs no grant.
    """

    method: str
    permissions: tuple[str, ...]
    resource: ResourceKind
    source: str
    denial_tolerated: str = ""


class RolePermissions(NamedTuple):
    """The permissions of a predefined role that matter on the resources it is granted on here."""

    role: str
    permissions: frozenset[str]
    source: str


def _rows(*rows: MethodPermission) -> dict[str, MethodPermission]:
    return {row.method: row for row in rows}


METHOD_PERMISSIONS: dict[str, MethodPermission] = _rows(
    # Pub/Sub (publisher: device agent telemetry; subscriber: fleet monitor).
    MethodPermission("google.pubsub.v1.Publisher/Publish", ("pubsub.topics.publish",), "topic", PUBSUB_METHODS),
    MethodPermission("google.pubsub.v1.Publisher/GetTopic", ("pubsub.topics.get",), "topic", PUBSUB_METHODS),
    MethodPermission(
        "google.pubsub.v1.Subscriber/GetSubscription", ("pubsub.subscriptions.get",), "subscription", PUBSUB_METHODS
    ),
    MethodPermission(
        "google.pubsub.v1.Subscriber/StreamingPull", ("pubsub.subscriptions.consume",), "subscription", PUBSUB_METHODS
    ),
    MethodPermission("google.pubsub.v1.Subscriber/Pull", ("pubsub.subscriptions.consume",), "subscription",
                     PUBSUB_METHODS),
    MethodPermission(
        "google.pubsub.v1.Subscriber/Acknowledge", ("pubsub.subscriptions.consume",), "subscription", PUBSUB_METHODS
    ),
    MethodPermission(
        "google.pubsub.v1.Subscriber/ModifyAckDeadline",
        ("pubsub.subscriptions.consume",),
        "subscription",
        PUBSUB_METHODS,
    ),
    MethodPermission("google.pubsub.v1.SchemaService/GetSchema", ("pubsub.schemas.get",), "schema", PUBSUB_METHODS),
    MethodPermission(
        "google.pubsub.v1.SchemaService/ValidateMessage", ("pubsub.schemas.validate",), "project", PUBSUB_METHODS
    ),
    # Cloud Storage JSON API (registry: devices read, the release and rollout pipelines write).
    MethodPermission("storage.objects.get", ("storage.objects.get",), "bucket", STORAGE_METHODS),
    MethodPermission("storage.objects.list", ("storage.objects.list",), "bucket", STORAGE_METHODS),
    MethodPermission("storage.objects.insert", ("storage.objects.create",), "bucket", STORAGE_METHODS),
    # "storage.objects.delete is also required if an object with the same name already exists".
    MethodPermission(
        "storage.objects.insert[overwrite]",
        ("storage.objects.create", "storage.objects.delete"),
        "bucket",
        STORAGE_METHODS,
    ),
    MethodPermission("storage.objects.delete", ("storage.objects.delete",), "bucket", STORAGE_METHODS),
    MethodPermission("storage.objects.patch", ("storage.objects.update",), "bucket", STORAGE_METHODS),
    MethodPermission(
        "storage.buckets.get",
        ("storage.buckets.get",),
        "bucket",
        STORAGE_METHODS,
        denial_tolerated="google-cloud-storage 3.x reads bucket metadata (project number, location) in a "
        "background thread for its trace span attributes and caches a fallback on 403; edgefleet never reads "
        "bucket metadata itself (DISABLE_GCS_PYTHON_CLIENT_OTEL_BUCKET_METADATA=true turns the reads off)",
    ),
    # Cloud Monitoring (fleet monitor's custom metrics). No emulator: recorded at the fake client's boundary.
    MethodPermission(
        "google.monitoring.v3.MetricService/CreateTimeSeries",
        ("monitoring.timeSeries.create",),
        "project",
        MONITORING_METHODS,
    ),
    MethodPermission(
        "google.monitoring.v3.MetricService/CreateMetricDescriptor",
        ("monitoring.metricDescriptors.create",),
        "project",
        MONITORING_METHODS,
    ),
    # Trust chain (issue 11) if the release key moves to Cloud KMS: no role grants these yet, so a recorded
    # call fails the conformance test until the program grants e.g. roles/cloudkms.signer on the key.
    MethodPermission(
        "google.cloud.kms.v1.KeyManagementService/AsymmetricSign",
        ("cloudkms.cryptoKeyVersions.useToSign",),
        "crypto_key",
        KMS_METHODS,
    ),
    MethodPermission(
        "google.cloud.kms.v1.KeyManagementService/GetPublicKey",
        ("cloudkms.cryptoKeyVersions.viewPublicKey",),
        "crypto_key",
        KMS_METHODS,
    ),
)

_PROJECT_READ = frozenset({"resourcemanager.projects.get", "resourcemanager.projects.list"})

ROLE_PERMISSIONS: dict[str, RolePermissions] = {
    row.role: row
    for row in (
        RolePermissions("roles/pubsub.publisher", frozenset({"pubsub.topics.publish"}), PUBSUB_ROLES),
        RolePermissions(
            "roles/pubsub.subscriber",
            frozenset({"pubsub.snapshots.seek", "pubsub.subscriptions.consume", "pubsub.topics.attachSubscription"}),
            PUBSUB_ROLES,
        ),
        RolePermissions(
            "roles/pubsub.viewer",
            frozenset(
                {
                    "pubsub.schemas.get",
                    "pubsub.schemas.list",
                    "pubsub.schemas.listRevisions",
                    "pubsub.schemas.validate",
                    "pubsub.snapshots.get",
                    "pubsub.snapshots.list",
                    "pubsub.subscriptions.get",
                    "pubsub.subscriptions.list",
                    "pubsub.topics.get",
                    "pubsub.topics.list",
                }
            )
            | _PROJECT_READ,
            PUBSUB_ROLES,
        ),
        RolePermissions(
            "roles/storage.objectViewer",
            frozenset(
                {
                    "storage.objects.get",
                    "storage.objects.list",
                    "storage.folders.get",
                    "storage.folders.list",
                    "storage.managedFolders.get",
                    "storage.managedFolders.list",
                }
            )
            | _PROJECT_READ,
            STORAGE_ROLES,
        ),
        RolePermissions(
            "roles/storage.objectCreator",
            frozenset(
                {
                    "storage.objects.create",
                    "storage.multipartUploads.abort",
                    "storage.multipartUploads.create",
                    "storage.multipartUploads.listParts",
                    "storage.folders.create",
                    "storage.managedFolders.create",
                }
            )
            | _PROJECT_READ,
            STORAGE_ROLES,
        ),
        RolePermissions(
            "roles/storage.objectUser",
            frozenset(
                {
                    "storage.objects.create",
                    "storage.objects.delete",
                    "storage.objects.get",
                    "storage.objects.list",
                    "storage.objects.restore",
                    "storage.objects.update",
                    "storage.multipartUploads.abort",
                    "storage.multipartUploads.create",
                    "storage.multipartUploads.list",
                    "storage.multipartUploads.listParts",
                    "storage.folders.create",
                    "storage.folders.delete",
                    "storage.folders.get",
                    "storage.folders.list",
                    "storage.folders.rename",
                    "storage.managedFolders.create",
                    "storage.managedFolders.delete",
                    "storage.managedFolders.get",
                    "storage.managedFolders.list",
                }
            )
            | _PROJECT_READ,
            STORAGE_ROLES,
        ),
        RolePermissions(
            "roles/monitoring.metricWriter",
            frozenset(
                {
                    "monitoring.metricDescriptors.create",
                    "monitoring.metricDescriptors.get",
                    "monitoring.metricDescriptors.list",
                    "monitoring.monitoredResourceDescriptors.get",
                    "monitoring.monitoredResourceDescriptors.list",
                    "monitoring.timeSeries.create",
                }
            ),
            MONITORING_ROLES,
        ),
    )
}


class UnknownMethodError(LookupError):
    """A recorded API method has no row in METHOD_PERMISSIONS."""

    def __init__(self, method: str) -> None:
        super().__init__(
            f"API method {method} is called but has no entry in tests.infra.support.iam_table.METHOD_PERMISSIONS; "
            "add a MethodPermission row with the permission(s) Google's IAM reference gives for it and that "
            "reference's address, then grant a role holding them in infra/src/edgefleet/infra/identity.py"
        )
        self.method = method


def permissions_for(method: str) -> MethodPermission:
    """The row of `method`.

    Raises:
        UnknownMethodError: naming the method and what to add.
    """
    try:
        return METHOD_PERMISSIONS[method]
    except KeyError:
        raise UnknownMethodError(method) from None


def roles_granting(permission: str) -> list[str]:
    """The roles of ROLE_PERMISSIONS that include `permission` (to suggest a fix)."""
    return sorted(role for role, row in ROLE_PERMISSIONS.items() if permission in row.permissions)
