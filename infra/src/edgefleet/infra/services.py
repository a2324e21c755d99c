"""Project prerequisites the program owns: the APIs it uses and the Pub/Sub service agent.

A new project has almost no API enabled: without this component the first `pulumi up` stops with 403
"API has not been used in project ... or it is disabled". Each API is a `gcp.projects.Service`, left enabled
when the stack is destroyed (other things in the project may use it). The Pub/Sub service agent
(`service-<number>@gcp-sa-pubsub.iam.gserviceaccount.com`) may not exist yet either: the
`gcp.projects.ServiceIdentity` resource creates it (or returns it when it exists) and gives its email, so the
dead-letter and BigQuery IAM members wait for it and no project-number lookup is needed (that lookup went
through the Resource Manager API before any `Service` could enable it).

Two prerequisites stay manual, because the provider needs them to manage any `Service` at all: the Service
Usage API (`serviceusage.googleapis.com`), through which every API is enabled, and the Cloud Resource Manager
API (`cloudresourcemanager.googleapis.com`), through which the provider reads the project of each `Service`
(a project where it is off fails the first `pulumi up` with 403 SERVICE_DISABLED on cloudresourcemanager, even
though the program enables it). `gcloud services enable serviceusage.googleapis.com
cloudresourcemanager.googleapis.com`; `edgefleet cloud check --project P` says which one is missing. The
program still owns the Resource Manager `Service` (so destroy/refresh keep it) and enables it first: every other
API waits for it.

A just-enabled API answers 403 for a while (eventual consistency): everything created through the APIs also
waits for `api_propagation`, a `pulumiverse_time.Sleep` of `propagation.apiWaitSeconds` after the last API is
enabled (run again only when the set of APIs changes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp
import pulumiverse_time

from edgefleet.infra.component import Component, ComponentArgs
from edgefleet.infra.names import (
    API_BIGQUERY,
    API_PUBSUB,
    API_RESOURCE_MANAGER,
    API_SQLADMIN,
    CORE_APIS,
    X509_APIS,
    member,
)


@dataclass(frozen=True, kw_only=True)
class ServicesArgs(ComponentArgs):
    """What the services component enables.

    Attributes:
        project: Google Cloud project id.
        bigquery: Also enable the BigQuery API (the optional telemetry export).
        x509_devices: Also enable STS and IAM Credentials (devices exchanging their certificates).
        fleet_state: Also enable the Cloud SQL Admin API (the optional Cloud SQL fleet state).
        api_wait_seconds: How long everything waits after the APIs are enabled.
    """

    bigquery: bool = False
    x509_devices: bool = False
    fleet_state: bool = False
    api_wait_seconds: int = 60

    @property
    def apis(self) -> tuple[str, ...]:
        return (CORE_APIS + ((API_BIGQUERY,) if self.bigquery else ()) + (X509_APIS if self.x509_devices else ())
                + ((API_SQLADMIN,) if self.fleet_state else ()))


class ProjectServices(Component):
    """Enabled APIs and the Pub/Sub service identity.

    Attributes:
        apis: API name (`pubsub.googleapis.com`) -> its `gcp.projects.Service`.
        pubsub_agent: The Pub/Sub service identity; `pubsub_agent_member` its IAM member string.
    """

    def __init__(self, name: str, args: ServicesArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("edgefleet:infra:ProjectServices", name, args, opts)
        self._project = args.project
        resource_manager = self._service(name, API_RESOURCE_MANAGER)
        self.apis: dict[str, gcp.projects.Service] = {API_RESOURCE_MANAGER: resource_manager} | {
            api: self._service(name, api, resource_manager) for api in args.apis if api != API_RESOURCE_MANAGER
        }
        self.api_propagation = pulumiverse_time.Sleep(
            f"{name}-api-propagation",
            create_duration=f"{args.api_wait_seconds}s",
            triggers={"apis": ",".join(sorted(self.apis))},
            opts=self._child(*self.apis.values()),
        )
        self.pubsub_agent = gcp.projects.ServiceIdentity(
            f"{name}-pubsub-agent",
            project=args.project,
            service=API_PUBSUB,
            opts=self._child(self.apis[API_PUBSUB], self.api_propagation),
        )
        self.pubsub_agent_member: pulumi.Output[str] = self.pubsub_agent.email.apply(member)
        self.register_outputs({"pubsub_agent": self.pubsub_agent.email})

    def _service(self, name: str, api: str, *after: pulumi.Resource) -> gcp.projects.Service:
        return gcp.projects.Service(
            f"{name}-api-{api.split('.', 1)[0]}",
            project=self._project,
            service=api,
            disable_on_destroy=False,  # other workloads in the project may use it
            disable_dependent_services=False,
            opts=self._child(*after),
        )

    def needed_by(self, *apis: str) -> Sequence[pulumi.Resource]:
        """What a resource using `apis` must depend on: their `Service` resources and the propagation wait."""
        return [*(self.apis[api] for api in apis), self.api_propagation]
