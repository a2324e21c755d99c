"""Project prerequisites the program owns: the APIs it uses and the Pub/Sub service agent.

A new project has almost no API enabled: without this component the first `pulumi up` stops with 403
"API has not been used in project ... or it is disabled". Each API is a `gcp.projects.Service`, left enabled
when the stack is destroyed (other things in the project may use it). The Pub/Sub service agent
(`service-<number>@gcp-sa-pubsub.iam.gserviceaccount.com`) may not exist yet either: the
`gcp.projects.ServiceIdentity` resource creates it (or returns it when it exists) and gives its email, so the
dead-letter and BigQuery IAM members wait for it and no project-number lookup is needed (that lookup went
through the Resource Manager API before any `Service` could enable it).

The one manual prerequisite left is the Service Usage API (`serviceusage.googleapis.com`), through which every
other API is enabled; it is on by default in new projects (`gcloud services enable serviceusage.googleapis.com`
otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from edgefleet.infra.component import Component, ComponentArgs
from edgefleet.infra.names import API_BIGQUERY, API_PUBSUB, CORE_APIS, member


@dataclass(frozen=True, kw_only=True)
class ServicesArgs(ComponentArgs):
    """What the services component enables.

    Attributes:
        project: Google Cloud project id.
        bigquery: Also enable the BigQuery API (the optional telemetry export).
    """

    bigquery: bool = False

    @property
    def apis(self) -> tuple[str, ...]:
        return CORE_APIS + ((API_BIGQUERY,) if self.bigquery else ())


class ProjectServices(Component):
    """Enabled APIs and the Pub/Sub service identity.

    Attributes:
        apis: API name (`pubsub.googleapis.com`) -> its `gcp.projects.Service`.
        pubsub_agent: The Pub/Sub service identity; `pubsub_agent_member` its IAM member string.
    """

    def __init__(self, name: str, args: ServicesArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("edgefleet:infra:ProjectServices", name, args, opts)
        self.apis: dict[str, gcp.projects.Service] = {
            api: gcp.projects.Service(
                f"{name}-api-{api.split('.', 1)[0]}",
                project=args.project,
                service=api,
                disable_on_destroy=False,  # other workloads in the project may use it
                disable_dependent_services=False,
                opts=self._child(),
            )
            for api in args.apis
        }
        self.pubsub_agent = gcp.projects.ServiceIdentity(
            f"{name}-pubsub-agent",
            project=args.project,
            service=API_PUBSUB,
            opts=self._child(self.apis[API_PUBSUB]),
        )
        self.pubsub_agent_member: pulumi.Output[str] = self.pubsub_agent.email.apply(member)
        self.register_outputs({"pubsub_agent": self.pubsub_agent.email})

    def needed_by(self, *apis: str) -> Sequence[pulumi.Resource]:
        """The `Service` resources a resource using `apis` must depend on."""
        return [self.apis[api] for api in apis]
