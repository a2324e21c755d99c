"""The stack configuration's typed, frozen models: what the Pulumi program needs, validated.

One model per concern (telemetry, registry, alerts, propagation waits, device credentials, the BigQuery
export, the fleet state), and `InfraConfig` holding them. The stack's `edgefleet:*` keys are the models'
camelCase aliases; `edgefleet.infra.stack_config` reads them from the stack into an `InfraConfig` and turns
a validation error into one naming the key and the `pulumi config set` command that fixes it. This module
does not import Pulumi (the local twin and the tests use the models and their defaults).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel


def _matching(pattern: str, rule: str) -> AfterValidator:
    """A string that must match `pattern` whole; else `rule` (with `{value}`) is the error."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(rule.format(value=value))
        return value

    return AfterValidator(check)


ProjectId = Annotated[str, _matching(
    r"[a-z][a-z0-9-]{4,28}[a-z0-9]",
    "a project id is 6-30 lowercase letters, digits or hyphens, starting with a letter "
    "(the id, not the display name or the number)")]
BucketName = Annotated[str, _matching(
    r"(?!.*\.\.)[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]",
    "a bucket name is 3-63 lowercase letters, digits, '-', '_' or '.', starting and ending with a letter or digit")]
FleetName = Annotated[str, _matching(
    r"[a-z][a-z0-9-]{0,19}", "a fleet name is 1-20 lowercase letters, digits or hyphens, starting with a letter")]
NotificationChannel = Annotated[str, _matching(
    r"projects/[^/]+/notificationChannels/[^/]+",
    "{value!r} is not a notification channel name; list yours with `gcloud beta monitoring channels list "
    "--format='value(name)'`")]
BigQueryId = Annotated[str, _matching(r"[A-Za-z0-9_]{1,1024}", "BigQuery ids are letters, digits and underscores")]


def _pem_certificate(value: str) -> str:
    """One PEM-encoded X.509 certificate (what the Workload Identity X.509 provider's trust store takes)."""
    from cryptography import x509

    if value.count("-----BEGIN CERTIFICATE-----") != 1:
        raise ValueError("each entry is exactly one PEM certificate (-----BEGIN CERTIFICATE----- ...)")
    try:
        x509.load_pem_x509_certificate(value.encode())
    except ValueError as error:
        raise ValueError(f"not a PEM X.509 certificate ({error})") from error
    return value


PemCertificate = Annotated[str, AfterValidator(_pem_certificate)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)


class TelemetrySettings(_Section):
    """The telemetry topic and its subscriptions. The local twin uses these defaults too."""

    message_retention_seconds: int = Field(
        default=7 * 24 * 3600,
        ge=600,
        le=31 * 24 * 3600,
        description="how long the topic keeps messages (Pub/Sub allows 10 minutes to 31 days)",
    )
    subscription_retention_seconds: int = Field(
        default=7 * 24 * 3600,
        ge=600,
        le=7 * 24 * 3600,
        description="how long the subscriptions keep unacked messages (Pub/Sub allows 10 minutes to 7 days)",
    )
    ack_deadline_seconds: int = Field(default=60, ge=10, le=600)
    dead_letter_max_attempts: int = Field(
        default=5,
        ge=5,
        le=100,
        description="deliveries before a message goes to the dead-letter topic (Pub/Sub allows 5 to 100)",
    )
    retry_minimum_backoff_seconds: int = Field(default=10, ge=0, le=600)
    retry_maximum_backoff_seconds: int = Field(default=600, ge=0, le=600)
    enforce_schema: bool = Field(
        default=True,
        description="attach the Avro schema to the topic (JSON encoding): Pub/Sub then rejects messages "
        "that are not valid telemetry; publishers must send the Avro JSON encoding",
    )


class RegistrySettings(_Section):
    """The model registry bucket."""

    bucket: BucketName | None = Field(default=None, description="bucket name; default <project>-<fleet>-registry")
    location: str | None = Field(default=None, description="bucket location; default the region")
    noncurrent_version_retention_days: int = Field(
        default=30,
        ge=1,
        description="noncurrent object versions are deleted this many days after they "
        "were replaced (channel pointers keep a short history)",
    )
    noncurrent_versions_kept: int = Field(
        default=5, ge=1, description="at most this many noncurrent versions of an object are kept"
    )


class AlertSettings(_Section):
    """Alert policy thresholds and where alerts go."""

    silent_minutes: int = Field(
        default=10,
        ge=2,
        le=1440,
        description="a device with no telemetry this long raises an alert (metric absence needs >= 2 min)",
    )
    latency_p95_ms: float = Field(default=100.0, gt=0, description="p95 inference latency alert threshold")
    latency_for_minutes: int = Field(
        default=5, ge=1, le=1440, description="how long p95 must stay over the threshold"
    )
    new_metric_wait_seconds: int = Field(
        default=120,
        ge=0,
        le=1800,
        description="after creating the custom metric descriptors, wait this long before creating alert "
        "policies on them (Cloud Monitoring refuses a policy on a metric type it does not see yet)",
    )
    dead_letter_messages: int = Field(
        default=0,
        ge=0,
        description="alert when more than this many messages wait in the dead-letter subscription",
    )
    drift_sd: float = Field(
        default=0.0,
        ge=0,
        description="alert when a device's drift metric (its shift in its own baseline's SDs, written only "
        "while the monitor's drift watch has it in drift) is over this; 0: every drift",
    )
    notification_channels: tuple[NotificationChannel, ...] = Field(
        default=(), description="notification channel names: projects/<p>/notificationChannels/<id>"
    )
    allow_without_channel: bool = Field(
        default=False,
        description="create the alert policies with no notification channel (they then alert nobody): "
        "refused at preview unless this is set",
    )

    @model_validator(mode="after")
    def _alerts_reach_someone(self) -> AlertSettings:
        if not self.notification_channels and not self.allow_without_channel:
            raise ValueError(NO_CHANNEL)
        return self


NO_CHANNEL = "no notification channel: the alert policies would alert nobody"


class PropagationSettings(_Section):
    """Waits for Google Cloud's eventual consistency on a first `pulumi up`."""

    api_wait_seconds: int = Field(
        default=60,
        ge=0,
        le=1800,
        description="after enabling the APIs, wait this long before creating anything through them (a "
        "just-enabled API answers 403 SERVICE_DISABLED for a while)",
    )
    service_account_wait_seconds: int = Field(
        default=30,
        ge=0,
        le=1800,
        description="after creating the service accounts, wait this long before granting them roles (a new "
        "account is not yet visible to IAM: 'Service account ... does not exist')",
    )


DeviceCredentialsKind = Literal["x509", "key"]


class DeviceSettings(_Section):
    """How devices get Google credentials: per-device X.509 certificates (Workload Identity Federation) or, as
    the fallback where the organization allows it, a key of the device service account made by hand."""

    credentials: DeviceCredentialsKind = Field(
        default="x509",
        description="x509: a Workload Identity pool with an X.509 provider trusting trustAnchors, whose "
        "certificates may act as the device service account; key: no pool (service account keys, made outside "
        "the program)",
    )
    trust_anchors: tuple[PemCertificate, ...] = Field(
        default=(), description="PEM certificates of the fleet CA(s) that sign the device certificates"
    )
    intermediate_cas: tuple[PemCertificate, ...] = Field(
        default=(), description="PEM certificates of intermediate CAs between the anchors and the devices"
    )

    @model_validator(mode="after")
    def _x509_needs_an_anchor(self) -> DeviceSettings:
        if self.credentials == "x509" and not self.trust_anchors:
            raise ValueError(NO_TRUST_ANCHOR)
        return self


NO_TRUST_ANCHOR = "device credentials x509 need the fleet CA's certificate"


class BigQueryExport(_Section):
    """Optional BigQuery subscription writing every telemetry message into a table."""

    dataset: BigQueryId = Field(description="dataset id, created by the program")
    table: BigQueryId = Field(default="telemetry", description="table id, created by the program")
    location: str | None = Field(default=None, description="dataset location; default the region")


FLEET_STATE_PRIVATE_NEEDS_NETWORK = "fleet state on a private IP needs the VPC network it is reachable from"


class FleetStateSettings(_Section):
    """Optional Cloud SQL for PostgreSQL for the fleet monitor's state (issue 23 item 2): several monitors on one
    database. Logins by IAM database authentication only (no password exists): the monitor's service account,
    through the Cloud SQL Auth Proxy (`--auto-iam-authn`)."""

    engine: Literal["cloudsql"] = Field(description="cloudsql: a Cloud SQL for PostgreSQL 15 instance")
    tier: str = Field(default="db-f1-micro", pattern=r"^db-[a-z0-9-]+$", description="machine tier")
    database: str = Field(default="edgefleet", pattern=r"^[a-z][a-z0-9_]{0,62}$", description="database name")
    network: Literal["public", "private"] = Field(
        default="public", description="public: a public IP reachable only through the Auth Proxy (client "
        "certificates required, no authorized networks); private: an IP in privateNetwork only")
    private_network: str | None = Field(
        default=None, pattern=r"^projects/[a-z][a-z0-9-]{4,28}[a-z0-9]/global/networks/[a-z]([-a-z0-9]*[a-z0-9])?$",
        description="the VPC (with private services access set up) of a private instance")
    availability: Literal["zonal", "regional"] = Field(default="zonal", description="regional: a standby zone")
    backups: bool = Field(default=True, description="daily backups with point-in-time recovery")
    deletion_protection: bool = Field(default=True, description="the instance cannot be deleted while on")

    @model_validator(mode="after")
    def _private_needs_a_network(self) -> FleetStateSettings:
        if self.network == "private" and self.private_network is None:
            raise ValueError(FLEET_STATE_PRIVATE_NEEDS_NETWORK)
        return self


class InfraConfig(_Section):
    """Everything the Pulumi program needs, validated."""

    project: ProjectId = Field(description="Google Cloud project id")
    region: str = Field(default="us-central1", min_length=1)
    fleet_name: FleetName = Field(default="edgefleet", description="labels, display names, default bucket name")
    telemetry: TelemetrySettings = TelemetrySettings()
    registry: RegistrySettings = RegistrySettings()
    alerts: AlertSettings = Field(description="thresholds; notificationChannels or allowWithoutChannel is required")
    propagation: PropagationSettings = PropagationSettings()
    devices: DeviceSettings = Field(description="device credentials: trustAnchors, or credentials: key")
    bigquery: BigQueryExport | None = None
    fleet_state: FleetStateSettings | None = Field(
        default=None, description="opt-in: the monitor's fleet state on Cloud SQL for PostgreSQL (default: SQLite)")

    @property
    def registry_bucket(self) -> str:
        """The registry bucket's name: the configured one, or `<project>-<fleet>-registry`."""
        return self.registry.bucket or f"{self.project}-{self.fleet_name}-registry"

    @property
    def registry_location(self) -> str:
        return self.registry.location or self.region
