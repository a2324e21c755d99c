"""The model registry, written: what the pipelines do (publish versions, move channels, write records).

    registry = open_registry_writer("gs://my-bucket/edgefleet")     # or "/srv/registry", "file:///srv/registry"
    registry.publish_version("birds", "1.2.0", "build/birds/1.2.0")
    registry.promote("birds", "1.2.0", "canary", by="release-flow", signing_key=key)
    state = registry.read_channel("birds", "canary")                # a writer reads too

Each writer extends the device's reader of the same backend (`edgefleet.device.registry`); the agent never
loads this package. Written for Python 3.9 like the device package: the device tests publish with it.
"""

from edgefleet.device.registry import ChannelState, JsonRecord, RegistryOptions, rollout_key
from edgefleet.flows.registry.base import PublishResult, RegistryWriter
from edgefleet.flows.registry.gcs import GcsRegistryWriter
from edgefleet.flows.registry.local import LocalRegistryWriter
from edgefleet.flows.registry.staged import stage_rollout
from edgefleet.flows.registry.uri import open_registry_writer

__all__ = [
    "ChannelState",
    "GcsRegistryWriter",
    "JsonRecord",
    "LocalRegistryWriter",
    "PublishResult",
    "RegistryOptions",
    "RegistryWriter",
    "open_registry_writer",
    "rollout_key",
    "stage_rollout",
]
