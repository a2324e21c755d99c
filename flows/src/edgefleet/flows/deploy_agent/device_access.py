"""Which device nodes and groups the agent's service needs, by its frame source (issue 22, item 6).

The unit's `DevicePolicy=closed` denies every device node not allowed by a `DeviceAllow=` line (the cgroup's
device filter, whatever the node's permissions). The Edge TPU needs USB device nodes (`char-usb_device`) or
`/dev/apex_*` (`char-apex`); a camera needs `/dev/video*` (`char-video4linux`), and libcamera also opens the
media controller (`/dev/media*`, `char-media`) and allocates frame buffers from `/dev/dma_heap/*`
(`char-dma_heap`). Those nodes belong to the `video` group (Debian, Raspberry Pi OS), which the agent's user
joins when its source is a camera. Class names are those of /proc/devices (systemd.resource-control(5)).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

TPU_DEVICE_CLASSES = ("usb_device", "apex")
TPU_GROUPS = ("plugdev", "apex")
CAMERA_DEVICE_CLASSES = ("video4linux", "media", "dma_heap")
CAMERA_GROUPS = ("video",)
DEFAULT_SOURCE_KIND = "images"  # the agent config's default source
_DEVICE_CLASS = re.compile(r"[a-z0-9_]+")


@dataclass(frozen=True)
class DeviceAccess:
    """The device classes the unit allows (read-write) and the groups the agent's user joins."""

    device_classes: tuple[str, ...] = TPU_DEVICE_CLASSES
    groups: tuple[str, ...] = TPU_GROUPS


SOURCE_ACCESS: Mapping[str, DeviceAccess] = MappingProxyType({
    "images": DeviceAccess(),
    "video": DeviceAccess(),
    "camera": DeviceAccess(TPU_DEVICE_CLASSES + CAMERA_DEVICE_CLASSES, TPU_GROUPS + CAMERA_GROUPS),
})
"""Frame source kind -> what the service needs (the Edge TPU always; a camera's nodes for a camera)."""


def source_kind(agent: Mapping[str, Any]) -> str:
    """The frame source kind of an agent.yaml document (`images` when it names none)."""
    source = agent.get("source") or {}
    return str(source.get("kind", DEFAULT_SOURCE_KIND)) if isinstance(source, Mapping) else DEFAULT_SOURCE_KIND


def device_access(kind: str) -> DeviceAccess:
    """What a service whose frames come from a `kind` source needs (the Edge TPU's only, for an unknown kind)."""
    return SOURCE_ACCESS.get(kind, DeviceAccess())


def device_allow_lines(device_classes: tuple[str, ...]) -> str:
    """The unit's `DeviceAllow=` lines (read-write) for `device_classes`.

    Raises:
        ValueError: a class name that is not a /proc/devices name (it goes into the unit).
    """
    for name in device_classes:
        if not _DEVICE_CLASS.fullmatch(name):
            raise ValueError(f"device class {name!r} is not a /proc/devices name")
    return "\n".join(f"DeviceAllow=char-{name} rw" for name in device_classes)
