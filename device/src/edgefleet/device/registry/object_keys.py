"""Registry keys, checked: every key a registry reads or writes is built here from checked names.

Both sides use these: the device's reader (`edgefleet.device.registry`) and the pipelines' writer
(`edgefleet.flows.registry`). A bad name becomes a RegistryError that says what to use instead.
"""

from __future__ import annotations

import re

from edgefleet.device.trust.version_bundle import MAX_MANIFEST_BYTES as MAX_MANIFEST_BYTES  # re-exported
from edgefleet.device.trust.version_bundle import MAX_SIGNATURE_BYTES as MAX_SIGNATURE_BYTES  # re-exported
from edgefleet.kernel.contracts.layout import (
    MODELS_PREFIX,
    ROLLOUTS_PREFIX,
    channel_key,
    check_name,
    version_prefix,
)
from edgefleet.kernel.errors import RegistryError, VerificationError

_KEY_PART = re.compile(r"^[A-Za-z0-9._=-]+$")
MAX_RECORD_BYTES = 8 * 1024 * 1024
"""A channel pointer or JSON record larger than this is refused unread (real ones are kilobytes)."""


def too_large(what: str, size: int, max_bytes: int) -> VerificationError:
    return VerificationError(
        f"{what} is {size} bytes, more than the {max_bytes} expected: refused before downloading it",
        "the registry object was replaced (or the manifest is wrong): re-publish the version and check who can "
        "write to the registry",
    )


def rollout_key(rollout_id: str) -> str:
    """The record key of a rollout: `rollouts/<id>.json`."""
    return f"{ROLLOUTS_PREFIX}/{checked_name('rollout id', rollout_id)}.json"


def checked_name(kind: str, value: str) -> str:
    try:
        return check_name(kind, value)
    except ValueError as error:
        raise RegistryError(str(error), f"use a valid {kind}") from None


def checked_version_prefix(model: str, version: str) -> str:
    """`models/<model>/<version>` of a valid model name and semantic version."""
    try:
        return version_prefix(model, version)
    except ValueError as error:
        raise RegistryError(str(error), "use the model name and semantic version from the manifest") from None


def checked_channel_key(model: str, channel: str) -> str:
    """`models/<model>/channels/<channel>.json` of valid names."""
    try:
        return channel_key(model, channel)
    except ValueError as error:
        raise RegistryError(str(error), "use a valid model and channel name, e.g. canary or stable") from None


def checked_record_key(key: str) -> str:
    """A JSON record's key: plain relative parts, outside `models/` (versions and channels have their own)."""
    parts = key.split("/")
    if (
        not key
        or key.startswith("/")
        or any(not _KEY_PART.fullmatch(part) or part in {".", ".."} for part in parts)
    ):
        raise RegistryError(
            f"record key {key!r} is not a plain relative key",
            "use keys like rollouts/<id>.json (letters, digits, '._=-', '/' between parts)",
        )
    if parts[0] == MODELS_PREFIX:
        raise RegistryError(
            f"record key {key!r} is inside {MODELS_PREFIX}/",
            "versions and channels change only through publish_version and set_channel/promote",
        )
    return key
