"""The fleet monitor's state on Cloud SQL for PostgreSQL (opt-in `fleetState`, issue 23 item 2).

Several monitor processes share one PostgreSQL database (`edgefleet.monitor.store_postgres`, `store.url`). The
program makes:

- a `POSTGRES_15` instance (`<fleet>-fleet-state`), IAM database authentication on (`cloudsql.iam_authentication`);
  `network: public`: a public IP that takes only connections carrying a Cloud SQL client certificate (the Auth
  Proxy and the connectors get one after checking `cloudsql.instances.connect`; no authorized networks) —
  `network: private`: no public IP, an address in `privateNetwork` (a VPC with private services access, set up
  outside this program); daily backups with point-in-time recovery, deletion protection (both settable);
- its database (`fleetState.database`, default `edgefleet`);
- the monitor service account as an IAM database user (`CLOUD_IAM_SERVICE_ACCOUNT`: no password exists) with
  `cloudsqlsuperuser`, so it can create its tables in the database (PostgreSQL 15 gives PUBLIC no CREATE in
  the `public` schema); the instance holds nothing but the fleet state;
- `roles/cloudsql.client` and `roles/cloudsql.instanceUser` for the monitor: Cloud SQL has no instance-level IAM
  policy, so both are bound on the project with an IAM condition naming this instance.

The monitor connects through the Cloud SQL Auth Proxy running as its identity
(`cloud-sql-proxy --auto-iam-authn [--private-ip] <connection name> --port 5432`), so its `store.url` is
`postgresql://<iam user>@127.0.0.1:5432/<database>`: `edgefleet config from-stack` writes both from the outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from edgefleet.infra.component import Component, ComponentArgs
from edgefleet.infra.config import FleetStateSettings
from edgefleet.infra.names import (
    FLEET_STATE_GRANTS,
    cloudsql_iam_user,
    cloudsql_instance_condition,
    fleet_state_instance_name,
    member,
)

POSTGRES_VERSION = "POSTGRES_15"
EDITION = "ENTERPRISE"  # the edition with shared-core tiers (db-f1-micro); Enterprise Plus starts larger
IAM_AUTHENTICATION_FLAG = "cloudsql.iam_authentication"
IAM_SERVICE_ACCOUNT_USER = "CLOUD_IAM_SERVICE_ACCOUNT"
# Connections only from Cloud SQL connectors (the Auth Proxy): they present a client certificate Cloud SQL issues
# after checking the caller's cloudsql.instances.connect.
SSL_MODE = "TRUSTED_CLIENT_CERTIFICATE_REQUIRED"
MONITOR_DATABASE_ROLES = ("cloudsqlsuperuser",)
AVAILABILITY = {"zonal": "ZONAL", "regional": "REGIONAL"}


@dataclass(frozen=True, kw_only=True)
class FleetStateArgs(ComponentArgs):
    """What the fleet state component needs.

    Attributes:
        region: The instance's region.
        fleet_name: Prefix of the instance name.
        settings: `fleetState` of the stack config.
        monitor_email: The monitor service account's email.
        labels: Instance labels.
    """

    region: str
    fleet_name: str
    settings: FleetStateSettings
    monitor_email: pulumi.Input[str]
    labels: dict[str, str]


class FleetState(Component):
    """The Cloud SQL instance, its database, the monitor's IAM login and its two conditioned grants.

    Attributes:
        instance, database, user: the resources; `connection_name` (`project:region:instance`) is the Auth
            Proxy's argument; `user_name` the monitor's database user.
    """

    def __init__(self, name: str, args: FleetStateArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("edgefleet:infra:FleetState", name, args, opts)
        settings = args.settings
        instance_name = fleet_state_instance_name(args.fleet_name)
        self.instance = gcp.sql.DatabaseInstance(
            f"{name}-fleet-state",
            project=args.project,
            name=instance_name,
            region=args.region,
            database_version=POSTGRES_VERSION,
            deletion_protection=settings.deletion_protection,
            settings=gcp.sql.DatabaseInstanceSettingsArgs(
                tier=settings.tier,
                edition=EDITION,
                availability_type=AVAILABILITY[settings.availability],
                deletion_protection_enabled=settings.deletion_protection,
                user_labels=args.labels,
                database_flags=[gcp.sql.DatabaseInstanceSettingsDatabaseFlagArgs(name=IAM_AUTHENTICATION_FLAG,
                                                                                 value="on")],
                ip_configuration=gcp.sql.DatabaseInstanceSettingsIpConfigurationArgs(
                    ipv4_enabled=settings.network == "public",
                    private_network=settings.private_network if settings.network == "private" else None,
                    ssl_mode=SSL_MODE,
                ),
                backup_configuration=gcp.sql.DatabaseInstanceSettingsBackupConfigurationArgs(
                    enabled=settings.backups, point_in_time_recovery_enabled=settings.backups),
            ),
            opts=self._child(protect=settings.deletion_protection),
        )
        self.database = gcp.sql.Database(f"{name}-fleet-state-database", project=args.project,
                                         instance=self.instance.name, name=settings.database, opts=self._child())
        self.user_name = pulumi.Output.from_input(args.monitor_email).apply(cloudsql_iam_user)
        self.user = gcp.sql.User(f"{name}-fleet-state-monitor-user", project=args.project,
                                 instance=self.instance.name, name=self.user_name, type=IAM_SERVICE_ACCOUNT_USER,
                                 database_roles=list(MONITOR_DATABASE_ROLES), opts=self._child())
        condition = gcp.projects.IAMMemberConditionArgs(
            title=f"only {instance_name}", description=f"the fleet state's Cloud SQL instance {instance_name}",
            expression=cloudsql_instance_condition(args.project, instance_name))
        monitor_member = pulumi.Output.from_input(args.monitor_email).apply(member)
        self.grants = [gcp.projects.IAMMember(f"{name}-{grant.name}", project=args.project, role=grant.role,
                                              member=monitor_member, condition=condition, opts=self._child())
                       for grant in FLEET_STATE_GRANTS]
        self.connection_name = self.instance.connection_name
        self.register_outputs({"connection_name": self.connection_name, "database": self.database.name,
                               "user": self.user_name})
