"""Names the Pulumi program derives (the shared Pub/Sub names come from `edgefleet.kernel.contracts.layout`).

No Pulumi import: tests and policy checks use these too.
"""

from __future__ import annotations

import json
from typing import Literal, NamedTuple

from edgefleet.kernel.contracts.layout import (
    FLEET_DEVICES_PREFIX,
    FLEET_ENROL_REQUESTS_PREFIX,
    FLEET_ENROL_TOKENS_PREFIX,
    FLEET_REVOKED_PREFIX,
)
from edgefleet.kernel.contracts.spotcheck import SPOTCHECK_PREFIX

COMPONENT_PREFIX = "edgefleet"

# Service accounts: `<fleet>-<role>` (account ids are 6-30 characters; fleet names are at most 20).
DEVICE_ACCOUNT_ROLE = "device"
PIPELINE_ACCOUNT_ROLE = "pipeline"
MONITOR_ACCOUNT_ROLE = "monitor"

# Predefined roles the program grants, each on one resource (metricWriter is project-level by nature).
ROLE_PUBSUB_PUBLISHER = "roles/pubsub.publisher"
ROLE_PUBSUB_SUBSCRIBER = "roles/pubsub.subscriber"
# The monitor checks its subscription at start (GetSubscription: pubsub.subscriptions.get), which
# roles/pubsub.subscriber does not include; roles/pubsub.viewer on the subscription alone grants it.
ROLE_PUBSUB_VIEWER = "roles/pubsub.viewer"
ROLE_STORAGE_OBJECT_VIEWER = "roles/storage.objectViewer"
ROLE_STORAGE_OBJECT_USER = "roles/storage.objectUser"
# Create only (no get, no delete: it cannot replace or remove an object, its own included): the devices' enrolment
# requests, conditioned on their prefix.
ROLE_STORAGE_OBJECT_CREATOR = "roles/storage.objectCreator"
ROLE_MONITORING_METRIC_WRITER = "roles/monitoring.metricWriter"
# Cloud SQL has no instance-level IAM: both are bound on the project, conditioned on the fleet state's instance.
ROLE_CLOUDSQL_CLIENT = "roles/cloudsql.client"  # connect through the Auth Proxy (cloudsql.instances.connect)
ROLE_CLOUDSQL_INSTANCE_USER = "roles/cloudsql.instanceUser"  # log in by IAM database authentication
ROLE_BIGQUERY_DATA_EDITOR = "roles/bigquery.dataEditor"
# Lets a federated identity (a device's X.509 certificate through the Workload Identity pool) act as a service
# account: granted on the device service account alone.
ROLE_WORKLOAD_IDENTITY_USER = "roles/iam.workloadIdentityUser"

# The Workload Identity pool and its X.509 provider for device certificates (ids: 4-32 characters).
DEVICE_POOL_SUFFIX = "devices"
DEVICE_X509_PROVIDER_ID = "device-x509"
# The device certificate's subject common name becomes google.subject (the device id, in Cloud Audit Logs).
DEVICE_CERT_SUBJECT_MAPPING = {"google.subject": "assertion.subject.dn.cn"}


# Google Cloud APIs the program (and the code of its identities) uses: `gcp.projects.Service` enables each one,
# never disabled on destroy. The Service Usage API itself (serviceusage.googleapis.com) is the one
# prerequisite: it is on by default in a new project and is what enabling the others goes through.
API_PUBSUB = "pubsub.googleapis.com"
API_STORAGE = "storage.googleapis.com"
API_IAM = "iam.googleapis.com"  # service accounts
API_RESOURCE_MANAGER = "cloudresourcemanager.googleapis.com"  # project-level IAM members
API_MONITORING = "monitoring.googleapis.com"
API_SQLADMIN = "sqladmin.googleapis.com"  # the optional Cloud SQL fleet state
API_BIGQUERY = "bigquery.googleapis.com"  # only with the BigQuery export
API_SERVICE_USAGE = "serviceusage.googleapis.com"
API_STS = "sts.googleapis.com"  # devices exchange their certificate for a federated token
API_IAM_CREDENTIALS = "iamcredentials.googleapis.com"  # ... and that token for the device account's token
# Enabled by hand before the first `pulumi up`: the provider manages every `Service` through both (services.py).
PREREQUISITE_APIS: tuple[str, ...] = (API_SERVICE_USAGE, API_RESOURCE_MANAGER)
X509_APIS: tuple[str, ...] = (API_STS, API_IAM_CREDENTIALS)
CORE_APIS: tuple[str, ...] = (API_PUBSUB, API_STORAGE, API_IAM, API_RESOURCE_MANAGER, API_MONITORING)
# Pulumi type module -> the API its resources are created through (policy checks and tests use it).
API_OF_MODULE: dict[str, str] = {
    "pubsub": API_PUBSUB,
    "storage": API_STORAGE,
    "serviceaccount": API_IAM,
    "iam": API_IAM,  # workload identity pools and providers
    "projects": API_RESOURCE_MANAGER,
    "monitoring": API_MONITORING,
    "bigquery": API_BIGQUERY,
    "sql": API_SQLADMIN,
}


# The registry's fleet records (device keys, revocations): all the monitor reads there.
FLEET_RECORDS_PREFIX = "fleet/"
# Where devices file their enrolment requests (edgefleet-agent enrol, create-only); they also write spotcheck/.
ENROL_REQUESTS_OBJECT_PREFIX = f"{FLEET_ENROL_REQUESTS_PREFIX}/"
if not all(prefix.startswith(FLEET_RECORDS_PREFIX) for prefix in (
        FLEET_DEVICES_PREFIX, FLEET_REVOKED_PREFIX, FLEET_ENROL_REQUESTS_PREFIX, FLEET_ENROL_TOKENS_PREFIX)):
    raise RuntimeError("the registry's fleet records moved out of fleet/: update FLEET_RECORDS_PREFIX")

# Where opted-in devices upload the frames of the labelled spot check (create-only, `spotcheck/<device_id>/`).
SPOTCHECK_OBJECT_PREFIX = f"{SPOTCHECK_PREFIX}/"

GrantTarget = Literal["telemetry_topic", "monitor_subscription", "registry_bucket", "project"]


class FleetGrant(NamedTuple):
    """One role the program grants a fleet identity, and on what (the Pulumi resource is `<prefix>-<name>`).

    `object_prefix` (registry bucket grants only) narrows the grant with an IAM condition to the objects under
    that prefix (and to listings of that prefix): `object_prefix_condition`.
    """

    identity: str
    role: str
    on: GrantTarget
    name: str
    object_prefix: str | None = None


# Every grant to the fleet's identities: infra/identity.py creates exactly these, `edgefleet cloud check` looks
# for them on the real project, tests/infra/test_policy_iam_conformance.py checks each is needed by the code.
FLEET_GRANTS: tuple[FleetGrant, ...] = (
    FleetGrant(DEVICE_ACCOUNT_ROLE, ROLE_PUBSUB_PUBLISHER, "telemetry_topic", "device-publishes-telemetry"),
    FleetGrant(DEVICE_ACCOUNT_ROLE, ROLE_STORAGE_OBJECT_VIEWER, "registry_bucket", "device-reads-registry"),
    # Devices behind NAT enrol by a one-time token (issue 23 item 4): each files one request, create-only
    # (ifGenerationMatch=0), under fleet/enrol-requests/ and nowhere else.
    FleetGrant(DEVICE_ACCOUNT_ROLE, ROLE_STORAGE_OBJECT_CREATOR, "registry_bucket", "device-files-enrol-requests",
               object_prefix=ENROL_REQUESTS_OBJECT_PREFIX),
    # Devices that opt in to the labelled spot check (issue 25) create their sampled frames, never replacing one,
    # under spotcheck/ and nowhere else (the operator's labels go to fleet/spotcheck-labels/, out of their reach).
    FleetGrant(DEVICE_ACCOUNT_ROLE, ROLE_STORAGE_OBJECT_CREATOR, "registry_bucket", "device-files-spot-check-frames",
               object_prefix=SPOTCHECK_OBJECT_PREFIX),
    # The whole bucket: model versions and channels (models/), agent releases and their channels (agent/), and,
    # as the edgefleet-enrol pool's identity (deploy-agent, enrol-approve), the fleet records: device keys and
    # revocations, the one-time tokens (fleet/enrol-tokens/, burnt by compare-and-swap) and the requests it reads.
    FleetGrant(PIPELINE_ACCOUNT_ROLE, ROLE_STORAGE_OBJECT_USER, "registry_bucket", "pipeline-writes-registry"),
    FleetGrant(MONITOR_ACCOUNT_ROLE, ROLE_PUBSUB_SUBSCRIBER, "monitor_subscription", "monitor-consumes-telemetry"),
    FleetGrant(MONITOR_ACCOUNT_ROLE, ROLE_PUBSUB_VIEWER, "monitor_subscription", "monitor-checks-subscription"),
    FleetGrant(MONITOR_ACCOUNT_ROLE, ROLE_MONITORING_METRIC_WRITER, "project", "monitor-writes-metrics"),
    # The monitor checks each message's signature against the device keys in the registry (fleet/devices/, and
    # the revocations in fleet/revoked/), which it does by default: it reads them, and nothing else there.
    FleetGrant(MONITOR_ACCOUNT_ROLE, ROLE_STORAGE_OBJECT_VIEWER, "registry_bucket", "monitor-reads-device-keys",
               object_prefix=FLEET_RECORDS_PREFIX),
)


# With `fleetState` (Cloud SQL): the monitor connects to and logs in to that one instance. Not in FLEET_GRANTS (they
# exist only when the stack has the instance): `fleet_grants(with_fleet_state)` is the full list then.
FLEET_STATE_GRANTS: tuple[FleetGrant, ...] = (
    FleetGrant(MONITOR_ACCOUNT_ROLE, ROLE_CLOUDSQL_CLIENT, "project", "monitor-connects-fleet-state"),
    FleetGrant(MONITOR_ACCOUNT_ROLE, ROLE_CLOUDSQL_INSTANCE_USER, "project", "monitor-logs-in-fleet-state"),
)
FLEET_STATE_ROLES = frozenset(grant.role for grant in FLEET_STATE_GRANTS)
FLEET_STATE_PORT = 5432  # where the monitor's Cloud SQL Auth Proxy listens (on 127.0.0.1)


def fleet_grants(with_fleet_state: bool) -> tuple[FleetGrant, ...]:
    """Every grant the program makes for a stack with or without the Cloud SQL fleet state."""
    return FLEET_GRANTS + (FLEET_STATE_GRANTS if with_fleet_state else ())


def fleet_state_instance_name(fleet_name: str) -> str:
    """The Cloud SQL instance of the fleet state."""
    return f"{fleet_name}-fleet-state"


def cloudsql_instance_condition(project: str, instance: str) -> str:
    """The CEL expression limiting a project-level Cloud SQL role to one instance."""
    return (f"resource.name == {json.dumps(f'projects/{project}/instances/{instance}')} && "
            f"resource.service == \"sqladmin.googleapis.com\"")


def cloudsql_iam_user(email: str) -> str:
    """The database user of a service account under IAM database authentication: its email without
    `.gserviceaccount.com` (PostgreSQL's 63-byte name limit)."""
    return email.removesuffix(".gserviceaccount.com")


def object_prefix_condition(bucket: str, prefix: str) -> str:
    """The CEL expression of an IAM condition granting a bucket role on the objects under `prefix` only.

    A read or get of an object is checked against the object's resource name
    (`projects/_/buckets/<bucket>/objects/<name>`); a listing is checked against the bucket, so it is allowed
    through the list request's prefix (`storage.googleapis.com/objectListPrefix`), which must start with `prefix`
    (a listing without a prefix, of the whole bucket, stays denied).
    """
    quoted = json.dumps(prefix)
    objects = json.dumps(f"projects/_/buckets/{bucket}/objects/{prefix}")
    return (f"resource.name.startsWith({objects}) || "
            f"api.getAttribute(\"storage.googleapis.com/objectListPrefix\", \"\").startsWith({quoted})")


def service_account_id(fleet_name: str, role: str) -> str:
    """Account id of the fleet's service account for `role`: `edgefleet-device`."""
    return f"{fleet_name}-{role}"


def service_account_email(account_id: str, project: str) -> str:
    """Email Google gives a user-managed service account."""
    return f"{account_id}@{project}.iam.gserviceaccount.com"


def pubsub_service_agent(project_number: str | int) -> str:
    """Email of the project's Pub/Sub service agent (it forwards messages to dead-letter topics)."""
    return f"service-{project_number}@gcp-sa-pubsub.iam.gserviceaccount.com"


def member(email: str) -> str:
    """IAM member string of a service account."""
    return f"serviceAccount:{email}"


def fleet_labels(fleet_name: str) -> dict[str, str]:
    """Labels put on every labelled resource, so the fleet's resources can be found and billed together."""
    return {"edgefleet-fleet": fleet_name, "managed-by": "pulumi"}
