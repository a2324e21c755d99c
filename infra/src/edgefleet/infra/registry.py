"""The model registry: one hardened bucket holding `models/<model>/<version>/...` and channel pointers."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from edgefleet.infra.component import Component, ComponentArgs
from edgefleet.infra.config import RegistrySettings

PUBLIC_ACCESS_PREVENTION_ENFORCED = "enforced"
NONCURRENT = "ARCHIVED"  # lifecycle `with_state` of noncurrent object versions


@dataclass(frozen=True, kw_only=True)
class RegistryArgs(ComponentArgs):
    """What the registry component needs.

    Attributes:
        project: Google Cloud project id.
        bucket_name: Globally unique bucket name.
        location: Bucket location (a region or multi-region).
        settings: Noncurrent version lifecycle.
        labels: Bucket labels.
        depends_on: What the bucket waits for (the Cloud Storage API).
    """

    bucket_name: str
    location: str
    settings: RegistrySettings
    labels: dict[str, str]


class Registry(Component):
    """The registry bucket.

    Hardened by default: uniform bucket-level access (IAM only, no object ACLs), public access prevention
    enforced (no binding can make it public), object versioning (an overwritten channel pointer or a
    deleted version can be recovered), lifecycle rules that delete noncurrent versions after a while, and
    `protect` so `pulumi destroy` cannot delete the fleet's models.

    Attributes:
        bucket: The bucket resource.
        uri: `gs://<bucket>`.
    """

    def __init__(self, name: str, args: RegistryArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("edgefleet:infra:Registry", name, args, opts)
        settings = args.settings
        delete = gcp.storage.BucketLifecycleRuleActionArgs(type="Delete")
        self.bucket = gcp.storage.Bucket(
            f"{name}-bucket",
            project=args.project,
            name=args.bucket_name,
            location=args.location,
            labels=args.labels,
            uniform_bucket_level_access=True,
            public_access_prevention=PUBLIC_ACCESS_PREVENTION_ENFORCED,
            versioning=gcp.storage.BucketVersioningArgs(enabled=True),
            force_destroy=False,
            lifecycle_rules=[
                gcp.storage.BucketLifecycleRuleArgs(
                    action=delete,
                    condition=gcp.storage.BucketLifecycleRuleConditionArgs(
                        with_state=NONCURRENT,
                        days_since_noncurrent_time=settings.noncurrent_version_retention_days,
                    ),
                ),
                gcp.storage.BucketLifecycleRuleArgs(
                    action=delete,
                    condition=gcp.storage.BucketLifecycleRuleConditionArgs(
                        with_state=NONCURRENT, num_newer_versions=settings.noncurrent_versions_kept
                    ),
                ),
            ],
            opts=self._child(protect=True),
        )
        self.uri = self.bucket.name.apply(lambda bucket: f"gs://{bucket}")
        self.register_outputs({"bucket": self.bucket.name, "uri": self.uri})
