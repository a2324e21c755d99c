"""Whose telemetry the monitor accepts: each device signs its messages with its own key (issue 11).

The fleet's device public keys come from the registry (`fleet/devices/<id>.json`, signed by the fleet enrolment
key: `edgefleet.monitor.fleetkeys`); they are re-read every `refresh_s` (a device removed or revoked counts from
then on); a device without a key is looked up alone (its record, and a revocation of its key), at most every
`unknown_refresh_s` fleet-wide, so a device enrolled a moment ago is not refused for a minute. A refused record
drops its device only; a revocation once seen holds while the monitor runs. A message is
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
from pathlib import Path
from typing import Annotated

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field

from edgefleet.device.identity import telemetry_signature_problem
from edgefleet.kernel.contracts.layout import ATTR_DEVICE_ID, ATTR_SIGNATURE
from edgefleet.kernel.errors import ConfigError, VerificationError
from edgefleet.kernel.signing import key_id, load_public_key
from edgefleet.monitor.fleetkeys import FleetKeys, KeyRecordPolicy, RefusedRecord, load_device_key, load_fleet_keys

log = logging.getLogger(__name__)

KEY_ID_PATTERN = r"^[0-9a-f]{16,64}$"
UNKNOWN_DEVICE_REFRESH_S = 5.0
"""A device without a key triggers a re-read of the registry at most this often (fleet-wide, not per device)."""

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
    enrolment_keys: tuple[str, ...] = Field(
        default=(), description="public key files of the fleet enrolment key(s) that sign device key records "
        "(several while the key is rotated); required with `registry`")
    accept_unsigned_key_records: bool = Field(
        default=False, description="transition only: also trust unsigned edgefleet.device-key/1 records (any "
        "registry writer can add a device); sign them with `edgefleet fleet keys sign`, then turn this off")
    revoked_keys: tuple[Annotated[str, Field(pattern=KEY_ID_PATTERN)], ...] = Field(
        default=(), description="device key ids (16 hex digits, as `edgefleet fleet keys revoke` prints them) never "
        "trusted, whatever the registry holds (a revocation no registry writer can remove)")
    unknown_refresh_s: float = Field(
        default=UNKNOWN_DEVICE_REFRESH_S, gt=0,
        description="a message from a device without a key re-reads the keys, at most this often (a device "
        "enrolled a moment ago is not refused until the next refresh)")


class TelemetryVerifier:
    """Checks the signature of each message against the fleet's device keys.

    Args:
        load_keys: returns the fleet's keys: a `FleetKeys` (`load_fleet_keys` of a registry) or a plain
            device_id -> public key mapping.
        require_signed: refuse unsigned messages.
        refresh_s: the keys are re-read at most this often.
        unknown_refresh_s: a device without a key triggers a look-up at most this often (fleet-wide).
        load_device: reads one device's key (`load_device_key`: device id, revoked key ids); None: a look-up
            re-reads every key.
        clock: monotonic seconds.
    """

    def __init__(self, load_keys: Callable[[], FleetKeys | Mapping[str, Ed25519PublicKey]], *,
                 require_signed: bool = False, refresh_s: float = 60.0,
                 unknown_refresh_s: float = UNKNOWN_DEVICE_REFRESH_S,
                 load_device: Callable[[str, frozenset[str]], FleetKeys] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._load_keys = load_keys
        self._load_device = load_device
        self._looked_up_at: float | None = None
        self.require_signed = require_signed
        self.refresh_s = refresh_s
        self.unknown_refresh_s = unknown_refresh_s
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: Mapping[str, Ed25519PublicKey] = {}
        self._loaded_at: float | None = None
        self._revoked: set[str] = set()
        self.refused_records: tuple[RefusedRecord, ...] = ()
        """The device key records the last read refused (each device of these is refused until fixed)."""

    @classmethod
    def from_config(cls, config: IdentityConfig) -> TelemetryVerifier | None:
        if config.registry is None:
            return None
        from edgefleet.device.registry import open_registry_reader

        policy = key_record_policy(config)
        registry = open_registry_reader(config.registry)
        return cls(lambda: load_fleet_keys(registry, policy), require_signed=config.require_signed,
                   refresh_s=config.refresh_s, unknown_refresh_s=config.unknown_refresh_s,
                   load_device=lambda device_id, revoked: load_device_key(registry, policy, device_id, revoked))

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
            # Every key is re-read every refresh_s (new devices learnt, removed or revoked ones forgotten); a device
            # without a key is looked up sooner (one enrolled since), at most every unknown_refresh_s fleet-wide.
            if self._loaded_at is None or now - self._loaded_at >= self.refresh_s:
                self._reload()
                self._loaded_at = self._looked_up_at = now
            elif device_id not in self._keys and (
                    self._looked_up_at is None or now - self._looked_up_at >= self.unknown_refresh_s):
                self._looked_up_at = now
                if self._load_device is None:
                    self._reload()
                else:
                    self._look_up(device_id)
            return self._keys.get(device_id)

    def _look_up(self, device_id: str) -> None:
        try:
            found = self._load_device(device_id, frozenset(self._revoked))  # type: ignore[misc]
        except Exception:  # noqa: BLE001 - the device waits for the next try
            log.warning("could not look up the key of device %s", device_id, exc_info=True)
            return
        self._revoked |= found.revoked
        fresh = {name: key for name, key in found.keys.items() if key_id(key) not in self._revoked}
        if fresh:
            self._keys = {**self._keys, **fresh}
        for record in found.refused:
            if record not in self.refused_records:
                log.warning("device key record %s refused (its device is refused): %s (fix: %s)",
                            record.record, record.reason, record.fix)
                self.refused_records = (*self.refused_records, record)

    def _reload(self) -> None:
        try:
            loaded = self._load_keys()
        except Exception:  # noqa: BLE001 - keep the keys we have; unknown devices wait for the next try
            log.warning("could not load the fleet's device keys", exc_info=True)
            return
        if not isinstance(loaded, FleetKeys):
            loaded = FleetKeys(dict(loaded))
        # A revocation seen once holds for this monitor's lifetime, even if removed from the registry since.
        self._revoked |= loaded.revoked
        keys, refused = {}, list(loaded.refused)
        for device_id, key in loaded.keys.items():
            if key_id(key) in self._revoked:
                refused.append(RefusedRecord(device_id, f"the key {key_id(key)} of device {device_id} was revoked "
                                             "and its revocation is gone from the registry",
                                             "check who can write to the registry; revoke it again"))
            else:
                keys[device_id] = key
        if set(refused) != set(self.refused_records):
            for record in refused:
                log.warning("device key record %s refused (its device is refused): %s (fix: %s)",
                            record.record, record.reason, record.fix)
        self._keys, self.refused_records = keys, tuple(refused)


def key_record_policy(config: IdentityConfig) -> KeyRecordPolicy:
    """The enrolment keys and settings of `config` (the key files read once).

    Raises:
        ConfigError: no enrolment key while unsigned records are not accepted, or a key file is unusable.
    """
    if not config.enrolment_keys and not config.accept_unsigned_key_records:
        raise ConfigError(
            "identity.registry is set but identity.enrolment_keys is empty: no device key record can be verified",
            "list the fleet enrolment public key file(s) in identity.enrolment_keys (deploy-agent's enrolment "
            "key, e.g. ~/.edgefleet/keys/fleet-enrolment.key.pub)")
    keys: dict[str, Ed25519PublicKey] = {}
    for path in config.enrolment_keys:
        try:
            key = load_public_key(Path(path).expanduser())
        except VerificationError as error:
            raise ConfigError(f"identity.enrolment_keys: {error.message}", error.fix) from error
        keys[key_id(key)] = key
    return KeyRecordPolicy(keys, config.accept_unsigned_key_records, frozenset(config.revoked_keys))
