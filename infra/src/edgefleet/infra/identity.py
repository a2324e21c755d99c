"""Fleet identity: one service account per role, each bound on the resources it uses and nothing else.

The grants are `edgefleet.infra.names.FLEET_GRANTS`:

| account  | role                          | on                             | why                            |
|----------|-------------------------------|--------------------------------|--------------------------------|
| device   | roles/pubsub.publisher        | the telemetry topic            | publish telemetry              |
| device   | roles/storage.objectViewer    | the registry bucket            | read models, channel pointers  |
| device   | roles/storage.objectCreator   | the registry bucket, `fleet/enrol-requests/` | file enrolment requests |
| device   | roles/storage.objectCreator   | the registry bucket, `spotcheck/` | upload spot-check frames (opt-in) |
| pipeline | roles/storage.objectUser      | the registry bucket            | write versions, move channels  |
| monitor  | roles/pubsub.subscriber       | the fleet-monitor subscription | consume telemetry              |
| monitor  | roles/pubsub.viewer           | the fleet-monitor subscription | check it at start (get)        |
| monitor  | roles/monitoring.metricWriter | the project                    | write the fleet's metrics      |
| monitor  | roles/storage.objectViewer    | the registry bucket, `fleet/`  | read device keys (signatures)  |

No primitive role (owner/editor/viewer) anywhere, no project-wide Pub/Sub or Storage role. The pipeline gets
`roles/storage.objectUser` rather than `objectCreator` + `objectViewer`: updating a channel pointer with a
generation precondition replaces an object, which needs `storage.objects.delete` (objectCreator cannot
overwrite); objectUser is the narrowest predefined role with create/get/list/update/delete on objects, and
unlike `objectAdmin` it cannot change object IAM. `roles/monitoring.metricWriter` can only be granted on a
project (time series have no finer resource); it is the narrow predefined role for it: create metric
descriptors and write time series, read nothing. The monitor reads its subscription's configuration when it
starts (`GetSubscription`, permission `pubsub.subscriptions.get`), which `roles/pubsub.subscriber` lacks;
`roles/pubsub.viewer` bound on that one subscription grants it and nothing wider. The monitor checks every
message's signature against the device keys under `fleet/devices/` (and the revocations under `fleet/revoked/`)
in the registry (its default), so it reads them, and only them: its `objectViewer` carries an IAM condition on
the object name prefix `fleet/` (and on a listing's prefix, `names.object_prefix_condition`); models and
channel pointers stay out of its reach. A device enrolling by a one-time token (`edgefleet-agent enrol`) files
its request create-only (`ifGenerationMatch=0`): `roles/storage.objectCreator` (create, never get, replace or
delete) conditioned on `fleet/enrol-requests/`; a device opted in to the labelled spot check creates its
sampled frames the same way under `spotcheck/`: the two places in the bucket a device writes. The pipeline's
bucket-wide `objectUser` also covers agent releases (`agent/`, `registry agent publish/promote`) and, as the
`edgefleet-enrol` pool's identity, `enrol-approve`: it reads `fleet/enrol-requests/`, burns tokens in
`fleet/enrol-tokens/` by compare-and-swap and writes `fleet/devices/`.

A new service account is not visible to IAM at once (a grant to it fails with "Service account ... does not
exist" for a while): every grant waits for `account_propagation`, a `pulumiverse_time.Sleep` of
`propagation.serviceAccountWaitSeconds` after the accounts are created. Every call each identity's
code makes is checked against these grants by tests/infra/test_policy_iam_conformance.py (table:
`tests/infra/support/iam_table.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp
import pulumiverse_time

from edgefleet.infra.component import Component, ComponentArgs
from edgefleet.infra.names import (
    DEVICE_ACCOUNT_ROLE,
    FLEET_GRANTS,
    MONITOR_ACCOUNT_ROLE,
    PIPELINE_ACCOUNT_ROLE,
    FleetGrant,
    member,
    object_prefix_condition,
    service_account_id,
)


@dataclass(frozen=True, kw_only=True)
class IdentityArgs(ComponentArgs):
    """What the identity component binds to.

    Attributes:
        project: Google Cloud project id.
        fleet_name: Prefix of the account ids.
        telemetry_topic: Name (or id) of the telemetry topic.
        monitor_subscription: Name (or id) of the fleet-monitor subscription.
        registry_bucket: Name of the registry bucket.
        service_account_wait_seconds: How long grants wait after the accounts are created.
        depends_on: What every account and binding waits for (the IAM and Resource Manager APIs).
    """

    fleet_name: str
    telemetry_topic: pulumi.Input[str]
    monitor_subscription: pulumi.Input[str]
    registry_bucket: pulumi.Input[str]
    service_account_wait_seconds: int = 30


class Identity(Component):
    """Service accounts for devices, the release pipeline and the fleet monitor, with their bindings.

    Attributes:
        device, pipeline, monitor: the service accounts (`.email`).
    """

    def __init__(self, name: str, args: IdentityArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("edgefleet:infra:Identity", name, args, opts)
        self._args = args
        self.device = self._account(
            name, DEVICE_ACCOUNT_ROLE, "edgefleet devices", "Publishes telemetry, reads the model registry."
        )
        self.pipeline = self._account(
            name,
            PIPELINE_ACCOUNT_ROLE,
            "edgefleet release pipeline",
            "Publishes model versions and moves channel pointers in the registry.",
        )
        self.monitor = self._account(
            name,
            MONITOR_ACCOUNT_ROLE,
            "edgefleet fleet monitor",
            "Consumes telemetry, writes the fleet's custom metrics.",
        )

        accounts = {DEVICE_ACCOUNT_ROLE: self.device, PIPELINE_ACCOUNT_ROLE: self.pipeline,
                    MONITOR_ACCOUNT_ROLE: self.monitor}
        self.account_propagation = pulumiverse_time.Sleep(
            f"{name}-service-account-propagation",
            create_duration=f"{args.service_account_wait_seconds}s",
            triggers={"accounts": ",".join(sorted(accounts))},
            opts=self._child(*accounts.values()),
        )
        for grant in FLEET_GRANTS:
            self._grant(f"{name}-{grant.name}", grant, _member(accounts[grant.identity]))

        self.register_outputs(
            {"device": self.device.email, "pipeline": self.pipeline.email, "monitor": self.monitor.email}
        )

    def _account(
        self, name: str, role: str, display_name: str, description: str
    ) -> gcp.serviceaccount.Account:
        return gcp.serviceaccount.Account(
            f"{name}-{role}",
            project=self._args.project,
            account_id=service_account_id(self._args.fleet_name, role),
            display_name=display_name,
            description=description,
            opts=self._child(),
        )

    def _grant(self, resource_name: str, grant: FleetGrant, member: pulumi.Output[str]) -> pulumi.Resource:
        args, child = self._args, self._child(self.account_propagation)
        if grant.on == "telemetry_topic":
            return gcp.pubsub.TopicIAMMember(resource_name, project=args.project, topic=args.telemetry_topic,
                                             role=grant.role, member=member, opts=child)
        if grant.on == "monitor_subscription":
            return gcp.pubsub.SubscriptionIAMMember(resource_name, project=args.project,
                                                    subscription=args.monitor_subscription, role=grant.role,
                                                    member=member, opts=child)
        if grant.on == "registry_bucket":
            return gcp.storage.BucketIAMMember(resource_name, bucket=args.registry_bucket, role=grant.role,
                                               member=member, condition=self._prefix_condition(grant), opts=child)
        return gcp.projects.IAMMember(resource_name, project=args.project, role=grant.role, member=member,
                                      opts=child)


    def _prefix_condition(self, grant: FleetGrant) -> gcp.storage.BucketIAMMemberConditionArgs | None:
        """The grant's IAM condition on the object name prefix, when it has one."""
        prefix = grant.object_prefix
        if prefix is None:
            return None
        return gcp.storage.BucketIAMMemberConditionArgs(
            title=f"only {prefix}",
            description=f"objects under {prefix} and listings of that prefix ({grant.name})",
            expression=pulumi.Output.from_input(self._args.registry_bucket).apply(
                lambda bucket: object_prefix_condition(bucket, prefix)),
        )


def _member(account: gcp.serviceaccount.Account) -> pulumi.Output[str]:
    return account.email.apply(member)
