"""The model registry, read: what a device needs (channel pointers, manifests, version files, fleet keys).

    registry = open_registry_reader("gs://my-bucket/edgefleet")    # or "/srv/registry", "file:///srv/registry"
    state = registry.read_channel("birds", "canary")                # (pointer, generation)
    registry.download_version("birds", state.pointer.version, "/tmp/birds")

One interface (`RegistryReader`), a local-directory and a GCS backend. Publishing versions, moving channels
and writing records is the pipelines' job: `edgefleet.flows.registry` (a writer extends each reader), never
loaded by the agent. See `edgefleet.device.registry.base` for the layout and the rules.
"""

from edgefleet.device.registry.base import ChannelState, JsonRecord, RegistryOptions, RegistryReader
from edgefleet.device.registry.gcs import GcsRegistryReader
from edgefleet.device.registry.local import LocalRegistryReader
from edgefleet.device.registry.object_keys import rollout_key
from edgefleet.device.registry.uri import (
    GcsLocation,
    LocalLocation,
    RegistryLocation,
    open_registry_reader,
    parse_registry_uri,
)

__all__ = [
    "ChannelState",
    "GcsLocation",
    "GcsRegistryReader",
    "JsonRecord",
    "LocalLocation",
    "LocalRegistryReader",
    "RegistryLocation",
    "RegistryOptions",
    "RegistryReader",
    "open_registry_reader",
    "parse_registry_uri",
    "rollout_key",
]
