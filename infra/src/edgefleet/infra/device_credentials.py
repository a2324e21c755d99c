"""Device credentials without service account keys: a Workload Identity pool with an X.509 provider.

New organizations forbid service account keys by default (`iam.disableServiceAccountKeyCreation`), and a key
is a long-lived secret on every device. Instead each device holds its own certificate, signed by the fleet CA
(`devices.trustAnchors`, optional `devices.intermediateCas`); Google's Security Token Service exchanges it
(mTLS) for a federated token, which may act as the device service account (`roles/iam.workloadIdentityUser` on
that one account, for the pool's principals): the device keeps exactly the device account's grants
(`FLEET_GRANTS`). The certificate's subject CN becomes `google.subject` (the device id, in audit logs).

The device's credentials file is a credential configuration, not a secret: `gcloud iam workload-identity-pools
create-cred-config <provider> --service-account <device account> --credential-cert-path ...
--credential-cert-private-key-path ... --output-file ...`, with `certificate_config_location` written into it so
it names its certificate configuration itself; deploy-agent installs it as the agent's `credentials_file`, which
the agent and `doctor` both read (infra/README.md, section 8).

With `devices.credentials: key` (where keys are allowed) none of this is created; the fallback is a key of the
device service account made by hand, never by the program (it would sit in the state).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from edgefleet.infra.component import Component, ComponentArgs
from edgefleet.infra.config import DeviceSettings
from edgefleet.infra.names import (
    DEVICE_CERT_SUBJECT_MAPPING,
    DEVICE_POOL_SUFFIX,
    DEVICE_X509_PROVIDER_ID,
    ROLE_WORKLOAD_IDENTITY_USER,
)


@dataclass(frozen=True, kw_only=True)
class DeviceCredentialsArgs(ComponentArgs):
    """What the device credentials component needs.

    Attributes:
        fleet_name: Prefix of the pool id.
        settings: The trust anchors and intermediate CAs.
        device_account: Name (`projects/<p>/serviceAccounts/<email>`) of the device service account.
        depends_on: The IAM, STS and IAM Credentials APIs, and the account's propagation.
    """

    fleet_name: str
    settings: DeviceSettings
    device_account: pulumi.Input[str]


def principal_set(pool_name: str) -> str:
    """Every identity of a Workload Identity pool (`projects/<number>/locations/global/workloadIdentityPools/<id>`)."""
    return f"principalSet://iam.googleapis.com/{pool_name}/*"


class DeviceCredentials(Component):
    """The device pool, its X.509 provider, and the pool's right to act as the device service account.

    Attributes:
        pool, provider: the pool and its X.509 provider (`provider.name` goes into each device's credential
            configuration).
        device_binding: `roles/iam.workloadIdentityUser` on the device account for the pool's principals.
    """

    def __init__(self, name: str, args: DeviceCredentialsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("edgefleet:infra:DeviceCredentials", name, args, opts)
        self.pool = gcp.iam.WorkloadIdentityPool(
            f"{name}-device-pool",
            project=args.project,
            workload_identity_pool_id=f"{args.fleet_name}-{DEVICE_POOL_SUFFIX}",
            display_name=f"{args.fleet_name} devices",
            description="Devices authenticating with their X.509 certificate (signed by the fleet CA)",
            opts=self._child(),
        )
        settings = args.settings
        self.provider = gcp.iam.WorkloadIdentityPoolProvider(
            f"{name}-device-x509",
            project=args.project,
            workload_identity_pool_id=self.pool.workload_identity_pool_id,
            workload_identity_pool_provider_id=DEVICE_X509_PROVIDER_ID,
            display_name="device certificates",
            attribute_mapping=dict(DEVICE_CERT_SUBJECT_MAPPING),
            x509=gcp.iam.WorkloadIdentityPoolProviderX509Args(
                trust_store=gcp.iam.WorkloadIdentityPoolProviderX509TrustStoreArgs(
                    trust_anchors=[gcp.iam.WorkloadIdentityPoolProviderX509TrustStoreTrustAnchorArgs(
                        pem_certificate=pem) for pem in settings.trust_anchors],
                    intermediate_cas=[gcp.iam.WorkloadIdentityPoolProviderX509TrustStoreIntermediateCaArgs(
                        pem_certificate=pem) for pem in settings.intermediate_cas] or None,
                ),
            ),
            opts=self._child(),
        )
        self.device_binding = gcp.serviceaccount.IAMMember(
            f"{name}-devices-act-as-device-account",
            service_account_id=args.device_account,
            role=ROLE_WORKLOAD_IDENTITY_USER,
            member=self.pool.name.apply(principal_set),
            opts=self._child(self.provider),
        )
        self.register_outputs({"provider": self.provider.name})
