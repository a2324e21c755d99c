"""The one way the pipelines open a registry for writing, on the device's URI parser.

    registry = open_registry_writer("gs://my-bucket/edgefleet")
    registry.publish_version("birds", "1.2.0", "build/birds/1.2.0")
    registry.promote("birds", "1.2.0", "canary", by="release-flow", signing_key=key)
"""

from __future__ import annotations

import os
from typing import Any

from edgefleet.device.registry.base import RegistryOptions
from edgefleet.device.registry.uri import GcsLocation, parse_registry_uri
from edgefleet.flows.registry.base import RegistryWriter


def open_registry_writer(
    uri: str | os.PathLike[str],
    *,
    create: bool = False,
    client: Any = None,
    options: RegistryOptions | None = None,
) -> RegistryWriter:
    """Opens the registry at `uri` for writing (and reading); the arguments and errors of
    `edgefleet.device.registry.open_registry_reader`, and `create`: a local directory is created when missing
    (otherwise it is an error on first use)."""
    location = parse_registry_uri(uri)
    if isinstance(location, GcsLocation):
        from edgefleet.flows.registry.gcs import GcsRegistryWriter

        return GcsRegistryWriter(location.bucket, location.prefix, client=client, options=options)
    from edgefleet.flows.registry.local import LocalRegistryWriter

    return LocalRegistryWriter(location.path, create=create, options=options)
