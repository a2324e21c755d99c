"""The Google Cloud clients `edgefleet cloud check` reads with (infra/cloud_check.py): a seam the command is
handed in tests (Click's context object), and the real clients with Application Default Credentials."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CloudClients:
    """The Google Cloud clients the checks read with."""

    service_usage: Any
    publisher: Any
    subscriber: Any
    schemas: Any
    storage: Any
    projects: Any
    metrics: Any


def default_clients(project: str) -> CloudClients:
    """Real clients with Application Default Credentials.

    Raises:
        google.auth.exceptions.DefaultCredentialsError: no credentials (the command turns it into advice).
    """
    from google.cloud import monitoring_v3, pubsub_v1, resourcemanager_v3, service_usage_v1, storage

    return CloudClients(
        service_usage=service_usage_v1.ServiceUsageClient(),
        publisher=pubsub_v1.PublisherClient(),
        subscriber=pubsub_v1.SubscriberClient(),
        schemas=pubsub_v1.SchemaServiceClient(),
        storage=storage.Client(project=project),
        projects=resourcemanager_v3.ProjectsClient(),
        metrics=monitoring_v3.MetricServiceClient(),
    )
