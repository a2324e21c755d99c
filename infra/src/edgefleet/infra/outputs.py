"""The stack outputs: what `pulumi stack output --json` prints, as a typed model.

The Pulumi program exports exactly these keys (`infra/__main__.py`), and `edgefleet config from-stack`
reads them back with this model, so both sides agree on the names. No Pulumi import here.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class StackOutputs(BaseModel):
    """Outputs of the edgefleet stack (extra outputs are allowed: a user may export more)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    project: str = Field(min_length=1, description="Google Cloud project id")
    region: str = Field(min_length=1)
    telemetry_topic: str = Field(min_length=1, description="short topic name, e.g. edgefleet-telemetry")
    telemetry_topic_id: str = Field(min_length=1, description="projects/<p>/topics/<topic>")
    telemetry_schema_id: str = Field(min_length=1, description="projects/<p>/schemas/<schema>")
    telemetry_schema_enforced: bool = Field(description="whether the topic rejects non-Avro-JSON messages")
    monitor_subscription: str = Field(
        min_length=1, description="short name of the fleet-monitor subscription"
    )
    dead_letter_topic: str = Field(min_length=1)
    dead_letter_subscription: str = Field(min_length=1)
    registry_bucket: str = Field(min_length=1)
    registry_uri: str = Field(min_length=1, description="gs://<bucket>")
    device_service_account: str = Field(min_length=1, description="email of the devices' service account")
    pipeline_service_account: str = Field(min_length=1, description="email of the release pipeline's account")
    monitor_service_account: str = Field(min_length=1, description="email of the fleet monitor's account")
    dashboard_id: str = Field(min_length=1)
    device_workload_identity_provider: str | None = Field(
        default=None,
        description="projects/<number>/locations/global/workloadIdentityPools/<pool>/providers/<provider>: "
        "the X.509 provider device certificates authenticate through (absent with devices.credentials: key)",
    )
    bigquery_table: str | None = Field(default=None, description="project.dataset.table when exported")
    fleet_state_connection_name: str | None = Field(
        default=None, description="project:region:instance of the Cloud SQL fleet state (with fleetState): the "
        "Cloud SQL Auth Proxy's argument")
    fleet_state_database: str | None = Field(default=None, description="the fleet state's database")
    fleet_state_user: str | None = Field(default=None, description="the monitor's IAM database user")
    fleet_state_private_ip: bool | None = Field(default=None, description="the instance has only a private IP")


OUTPUT_KEYS: tuple[str, ...] = tuple(StackOutputs.model_fields)
REQUIRED_OUTPUT_KEYS: tuple[str, ...] = tuple(
    name for name, field in StackOutputs.model_fields.items() if field.is_required()
)
