"""Model registry clients: one interface (`Registry`), a local-directory and a GCS backend.

    registry = Registry.from_uri("gs://my-bucket/edgefleet")      # or "/srv/registry", "file:///srv/registry"
    registry.publish_version("birds", "1.2.0", "build/birds/1.2.0")
    registry.promote("birds", "1.2.0", "canary", by="release-flow")
    state = registry.read_channel("birds", "canary")                # (pointer, generation)

See `edgefleet.device.registry.base` for the layout and the rules (immutable versions, manifest last,
compare-and-swap channel pointers).
"""

from edgefleet.device.registry.base import (
    ChannelState,
    JsonRecord,
    PublishResult,
    Registry,
    RegistryOptions,
    rollout_key,
)
from edgefleet.device.registry.gcs import GcsRegistry
from edgefleet.device.registry.local import LocalRegistry

__all__ = [
    "ChannelState",
    "GcsRegistry",
    "JsonRecord",
    "LocalRegistry",
    "PublishResult",
    "Registry",
    "RegistryOptions",
    "rollout_key",
]
