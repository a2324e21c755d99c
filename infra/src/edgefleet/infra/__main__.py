"""The edgefleet Pulumi program: wires the components together and exports the stack outputs.

`pulumi up` runs this file as `__main__` (Pulumi.yaml: `main: infra/`). Tests import it and call `main()`
under Pulumi's mocks. Every output key is a field of `edgefleet.infra.outputs.StackOutputs`, which
`edgefleet config from-stack` reads back.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from edgefleet.infra.config import FleetStateSettings, InfraConfig
from edgefleet.infra.device_credentials import DeviceCredentials, DeviceCredentialsArgs
from edgefleet.infra.fleet_state import FleetState, FleetStateArgs
from edgefleet.infra.identity import Identity, IdentityArgs
from edgefleet.infra.monitoring import Monitoring, MonitoringArgs
from edgefleet.infra.names import (
    API_BIGQUERY,
    API_IAM,
    API_MONITORING,
    API_PUBSUB,
    API_RESOURCE_MANAGER,
    API_SQLADMIN,
    API_STORAGE,
    COMPONENT_PREFIX,
    X509_APIS,
    fleet_labels,
)
from edgefleet.infra.outputs import OUTPUT_KEYS
from edgefleet.infra.registry import Registry, RegistryArgs
from edgefleet.infra.services import ProjectServices, ServicesArgs
from edgefleet.infra.stack_config import NAMESPACE, load_config
from edgefleet.infra.telemetry import Telemetry, TelemetryArgs
from edgefleet.kernel.contracts import layout
from edgefleet.kernel.errors import ConfigError


@dataclass(frozen=True)
class FleetComponents:
    """The components one stack creates (the optional ones None when the config leaves them out)."""

    services: ProjectServices
    telemetry: Telemetry
    registry: Registry
    identity: Identity
    devices: DeviceCredentials | None
    fleet_state: FleetState | None
    monitoring: Monitoring


def build(config: InfraConfig) -> dict[str, pulumi.Input]:
    """Creates every component for `config`; returns the stack outputs by name."""
    labels = fleet_labels(config.fleet_name)
    # First the prerequisites of everything else: the APIs and the Pub/Sub service agent.
    services = _services(config)
    telemetry = _telemetry(config, services, labels)
    registry = _registry(config, services, labels)
    identity = _identity(config, services, telemetry, registry)
    # x509: a Workload Identity pool; key: the documented fallback, a key of the device account made by hand
    devices = _device_credentials(config, services, identity) if _x509_devices(config) else None
    fleet_state = None
    if config.fleet_state is not None:  # opt-in: else the monitor keeps its state in SQLite
        fleet_state = _fleet_state(config, config.fleet_state, services, identity, labels)
    monitoring = _monitoring(config, services, labels)
    return stack_outputs(
        config, FleetComponents(services, telemetry, registry, identity, devices, fleet_state, monitoring)
    )


def _x509_devices(config: InfraConfig) -> bool:
    return config.devices.credentials == "x509"


def _services(config: InfraConfig) -> ProjectServices:
    return ProjectServices(
        COMPONENT_PREFIX,
        ServicesArgs(project=config.project, bigquery=config.bigquery is not None, x509_devices=_x509_devices(config),
                     fleet_state=config.fleet_state is not None, api_wait_seconds=config.propagation.api_wait_seconds),
    )


def _telemetry(config: InfraConfig, services: ProjectServices, labels: dict[str, str]) -> Telemetry:
    telemetry_apis = (API_PUBSUB, API_BIGQUERY) if config.bigquery is not None else (API_PUBSUB,)
    return Telemetry(
        COMPONENT_PREFIX,
        TelemetryArgs(
            project=config.project,
            service_agent=services.pubsub_agent_member,
            depends_on=[*services.needed_by(*telemetry_apis), services.pubsub_agent],
            settings=config.telemetry,
            labels=labels,
            bigquery=config.bigquery,
            bigquery_location=config.region,
        ),
    )


def _registry(config: InfraConfig, services: ProjectServices, labels: dict[str, str]) -> Registry:
    return Registry(
        COMPONENT_PREFIX,
        RegistryArgs(
            project=config.project,
            bucket_name=config.registry_bucket,
            location=config.registry_location,
            settings=config.registry,
            labels=labels,
            depends_on=services.needed_by(API_STORAGE),
        ),
    )


def _identity(config: InfraConfig, services: ProjectServices, telemetry: Telemetry, registry: Registry) -> Identity:
    return Identity(
        COMPONENT_PREFIX,
        IdentityArgs(
            project=config.project,
            fleet_name=config.fleet_name,
            telemetry_topic=telemetry.topic.name,
            monitor_subscription=telemetry.monitor_subscription.name,
            registry_bucket=registry.bucket.name,
            service_account_wait_seconds=config.propagation.service_account_wait_seconds,
            depends_on=services.needed_by(API_IAM, API_RESOURCE_MANAGER, API_PUBSUB, API_STORAGE),
        ),
    )


def _device_credentials(config: InfraConfig, services: ProjectServices, identity: Identity) -> DeviceCredentials:
    return DeviceCredentials(
        COMPONENT_PREFIX,
        DeviceCredentialsArgs(
            project=config.project,
            fleet_name=config.fleet_name,
            settings=config.devices,
            device_account=identity.device.name,
            depends_on=[*services.needed_by(API_IAM, *X509_APIS), identity.account_propagation],
        ),
    )


def _fleet_state(config: InfraConfig, settings: FleetStateSettings, services: ProjectServices, identity: Identity,
                 labels: dict[str, str]) -> FleetState:
    return FleetState(
        COMPONENT_PREFIX,
        FleetStateArgs(
            project=config.project,
            region=config.region,
            fleet_name=config.fleet_name,
            settings=settings,
            monitor_email=identity.monitor.email,
            labels=labels,
            depends_on=[*services.needed_by(API_SQLADMIN, API_RESOURCE_MANAGER), identity.account_propagation],
        ),
    )


def _monitoring(config: InfraConfig, services: ProjectServices, labels: dict[str, str]) -> Monitoring:
    return Monitoring(
        COMPONENT_PREFIX,
        MonitoringArgs(
            project=config.project,
            fleet_name=config.fleet_name,
            alerts=config.alerts,
            monitor_subscription=layout.MONITOR_SUBSCRIPTION,
            dead_letter_subscription=layout.DEAD_LETTER_SUBSCRIPTION,
            labels=labels,
            depends_on=services.needed_by(API_MONITORING),
        ),
    )


def stack_outputs(config: InfraConfig, components: FleetComponents) -> dict[str, pulumi.Input]:
    """The stack outputs by name: every key a field of `StackOutputs` (the optional ones when their component is
    there)."""
    telemetry, registry, identity = components.telemetry, components.registry, components.identity
    outputs: dict[str, pulumi.Input] = {
        "project": config.project,
        "region": config.region,
        "telemetry_topic": telemetry.topic.name,
        "telemetry_topic_id": telemetry.topic.id,
        "telemetry_schema_id": telemetry.schema.id,
        "telemetry_schema_enforced": config.telemetry.enforce_schema,
        "monitor_subscription": telemetry.monitor_subscription.name,
        "dead_letter_topic": telemetry.dead_letter_topic.name,
        "dead_letter_subscription": telemetry.dead_letter_subscription.name,
        "registry_bucket": registry.bucket.name,
        "registry_uri": registry.uri,
        "device_service_account": identity.device.email,
        "pipeline_service_account": identity.pipeline.email,
        "monitor_service_account": identity.monitor.email,
        "dashboard_id": components.monitoring.dashboard.id,
    }
    if components.devices is not None:
        outputs["device_workload_identity_provider"] = components.devices.provider.name
    if components.fleet_state is not None and config.fleet_state is not None:
        outputs["fleet_state_connection_name"] = components.fleet_state.connection_name
        outputs["fleet_state_database"] = components.fleet_state.database.name
        outputs["fleet_state_user"] = components.fleet_state.user_name
        outputs["fleet_state_private_ip"] = config.fleet_state.network == "private"
    if telemetry.bigquery_table_ref is not None:
        outputs["bigquery_table"] = telemetry.bigquery_table_ref
    unknown = set(outputs) - set(OUTPUT_KEYS)
    if unknown:  # a programming error: StackOutputs and this program must agree
        raise RuntimeError(f"outputs {sorted(unknown)} are not fields of StackOutputs")
    return outputs


def main() -> dict[str, pulumi.Input]:
    """Reads the stack config, builds the stack and exports its outputs.

    Raises:
        pulumi.RunError: when the stack config is wrong; Pulumi shows its message (the key and the
            `pulumi config set` command that fixes it) without a Python traceback.
    """
    try:
        config = load_config(pulumi.Config(NAMESPACE))
    except ConfigError as error:
        raise pulumi.RunError(str(error)) from error
    outputs = build(config)
    for key, value in outputs.items():
        pulumi.export(key, value)
    return outputs


if __name__ == "__main__":
    main()
