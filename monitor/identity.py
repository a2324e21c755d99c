"""Whose telemetry the monitor accepts: each device signs its messages with its own key (issue 11).

The fleet's device public keys come from the registry (`fleet/devices/<id>.json`, `edgefleet.device.fleetkeys`);
they are re-read at most every `refresh_s` (a device added or removed counts from then on). A message is
refused (counted, nacked, so Pub/Sub dead-letters it) when:
- it claims a device the fleet has a key for, and is unsigned or not signed by that key;
- it is signed but names a device the fleet has no key for;
- its body names another device than its (signed) `device_id` attribute;
- `require_signed` is set and it is unsigned.
Unsigned messages of devices without a key pass while `require_signed` is off (agents not upgraded yet).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field

from edgefleet.device.identity import telemetry_signature_problem
from edgefleet.kernel.contracts.layout import ATTR_DEVICE_ID, ATTR_SIGNATURE

log = logging.getLogger(__name__)

FORGED_PREFIX = "unauthenticated: "
"""Reasons of refused (forged or unverifiable) messages start with this; the monitor counts them apart."""


class IdentityConfig(BaseModel):
    """Device identities (the monitor config's `identity` section)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    registry: str | None = Field(
        default=None, description="registry holding fleet/devices/<id>.json; None: signatures are not checked"
    )
    require_signed: bool = Field(default=False, description="refuse unsigned messages (every agent upgraded)")
    refresh_s: float = Field(default=60.0, gt=0, description="re-read device keys at most this often")


class TelemetryVerifier:
    """Checks the signature of each message against the fleet's device keys.

    Args:
        load_keys: returns device_id -> public key (e.g. `load_fleet_keys` of a registry).
        require_signed: refuse unsigned messages.
        refresh_s: an unknown device triggers a re-read of the keys at most this often.
        clock: monotonic seconds.
    """

    def __init__(self, load_keys: Callable[[], Mapping[str, Ed25519PublicKey]], *, require_signed: bool = False,
                 refresh_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._load_keys = load_keys
        self.require_signed = require_signed
        self.refresh_s = refresh_s
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: Mapping[str, Ed25519PublicKey] = {}
        self._loaded_at: float | None = None

    @classmethod
    def from_config(cls, config: IdentityConfig) -> TelemetryVerifier | None:
        if config.registry is None:
            return None
        from edgefleet.device.fleetkeys import load_fleet_keys
        from edgefleet.device.registry import open_registry_reader

        registry = open_registry_reader(config.registry)
        return cls(lambda: load_fleet_keys(registry), require_signed=config.require_signed,
                   refresh_s=config.refresh_s)

    def problem(self, data: bytes, attributes: Mapping[str, str]) -> str | None:
        """Why the message must be refused (starts with FORGED_PREFIX), or None."""
        device_id = attributes.get(ATTR_DEVICE_ID) or ""
        signed = bool(attributes.get(ATTR_SIGNATURE))
        key = self._key(device_id)
        if key is None:
            if signed:
                return f"{FORGED_PREFIX}signed message from {device_id or 'no device'}, which has no key in the fleet"
            if self.require_signed:
                return f"{FORGED_PREFIX}unsigned message from {device_id or 'no device'}"
            return None
        problem = telemetry_signature_problem(key, data, dict(attributes))
        if problem is not None:
            return FORGED_PREFIX + problem
        try:
            body_device = json.loads(data).get("device_id")
        except (ValueError, AttributeError):
            return None  # signed by the device but not a message: ingest refuses it as malformed
        if body_device != device_id:
            return f"{FORGED_PREFIX}device {device_id} signed a message about device {str(body_device)[:64]}"
        return None

    def _key(self, device_id: str) -> Ed25519PublicKey | None:
        with self._lock:
            now = self._clock()
            # Re-read at most every refresh_s: new devices are learnt, removed (stolen) ones forgotten.
            due = self._loaded_at is None or now - self._loaded_at >= self.refresh_s
            if due:
                try:
                    self._keys = dict(self._load_keys())
                except Exception:  # noqa: BLE001 - keep the keys we have; unknown devices wait for the next try
                    log.warning("could not load the fleet's device keys", exc_info=True)
                self._loaded_at = now
            return self._keys.get(device_id)
