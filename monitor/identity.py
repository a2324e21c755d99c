"""Whose telemetry the monitor accepts: each device signs its messages with its own key (issues 11 and 20).

The fleet's device public keys come from the registry (`fleet/devices/<id>.json`, `edgefleet.device.fleetkeys`);
they are re-read at most every `refresh_s` (a device added or removed counts from then on).

Identity is the message body's `device_id`, checked against the verified signer (issue 20, item 1): the key is
chosen by the body's `device_id` and the signature covers that id. The Pub/Sub `device_id` attribute is a
routing hint only: absent, it is not needed; present, it must name the body's device, else the message is
refused (never is one used to pick the key and the other applied). A message is refused (counted, nacked, so
Pub/Sub dead-letters it) when:
- its attribute names another device than its body;
- its body names a device the fleet has a key for, and it is unsigned or not signed by that key;
- mode `strict` (the default): it is unsigned, or signed by a device the fleet has no key for.
Mode `transition` (explicit, for a fleet moving from unsigned agents): a message naming a device without a
key passes unverified (signed or not), and the ingest refuses an unverified message for a device once heard
signed (`edgefleet.monitor.ingest`). Strict mode needs `registry`; a config without one is an error naming
the fix, unless `mode: transition` (then, without a registry, no signature is checked at all).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgefleet.device.identity import telemetry_signature_problem
from edgefleet.kernel.contracts.layout import ATTR_DEVICE_ID, ATTR_SIGNATURE
from edgefleet.kernel.errors import ConfigError

log = logging.getLogger(__name__)

FORGED_PREFIX = "unauthenticated: "
"""Reasons of refused (forged or unverifiable) messages start with this; the monitor counts them apart."""

IdentityMode = Literal["strict", "transition"]
UNKNOWN_DEVICE_REFRESH_S = 5.0
"""A message naming a device without a known key re-reads the keys at most this often (known ones: refresh_s)."""
UPGRADE_DOC = "README, 'Upgrading a fleet to signed telemetry'"


class IdentityConfig(BaseModel):
    """Device identities (the monitor config's `identity` section).

    `mode` is the setting; `require_signed` is its older spelling (true = strict, false = transition) and
    always agrees with it once read."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    registry: str | None = Field(
        default=None, description="registry holding fleet/devices/<id>.json (needed in strict mode)"
    )
    mode: IdentityMode = Field(
        default="strict", description="strict: only telemetry signed by a known device; transition: devices "
                                      "without a key may still send unsigned (upgrading a fleet)")
    require_signed: bool = Field(default=True, description="older spelling of mode (true: strict)")
    refresh_s: float = Field(default=60.0, gt=0, description="re-read device keys at most this often")

    @model_validator(mode="before")
    @classmethod
    def _mode_from_require_signed(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        mode, required = data.get("mode"), data.get("require_signed")
        if mode is None:
            mode = "transition" if required is False else "strict"
        if required is None:
            required = mode == "strict"
        if required is not (mode == "strict") and isinstance(required, bool):
            raise ValueError(f"identity.require_signed: {str(required).lower()} contradicts identity.mode: {mode} "
                             "(drop require_signed: mode says it)")
        return {**data, "mode": mode, "require_signed": required}

    def checked(self) -> IdentityConfig:
        """This config, when the monitor can run with it.

        Raises:
            ConfigError: strict mode (the default) without a key registry.
        """
        if self.mode == "strict" and self.registry is None:
            raise ConfigError(
                "the monitor config has no identity.registry: the monitor checks every message's device "
                "signature against the fleet's device keys by default, and has nowhere to read them from",
                "set identity.registry to the registry holding fleet/devices/<id>.json (the one deploy-agent "
                "registers device keys in); while upgrading a fleet of unsigned agents set identity.mode: "
                f"transition explicitly (see the {UPGRADE_DOC})")
        return self


@dataclass(frozen=True)
class Verdict:
    """What the signature check says of one message.

    Attributes:
        problem: why it must be refused (starts with FORGED_PREFIX), or None.
        verified: signed by the key of the device its body names.
        device_id: the device its body names (None when the body names none: ingest refuses it as malformed).
    """

    problem: str | None
    verified: bool = False
    device_id: str | None = None


def body_device_id(data: bytes) -> str | None:
    """The `device_id` a message body names (a plain string in both wire encodings), or None."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        return None
    device_id = document.get("device_id") if isinstance(document, dict) else None
    return device_id if isinstance(device_id, str) and device_id else None


class TelemetryVerifier:
    """Checks the signature of each message against the fleet's device keys (see the module docstring).

    Args:
        load_keys: returns device_id -> public key (e.g. `load_fleet_keys` of a registry).
        require_signed: strict mode (the default): refuse unsigned messages and devices without a key.
        refresh_s: an unknown device triggers a re-read of the keys at most this often.
        clock: monotonic seconds.
    """

    def __init__(self, load_keys: Callable[[], Mapping[str, Ed25519PublicKey]], *, require_signed: bool = True,
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
        """The verifier `config` asks for; None only in transition mode without a registry.

        Raises:
            ConfigError: strict mode (the default) without a registry.
        """
        if config.checked().registry is None:
            return None
        from edgefleet.device.fleetkeys import load_fleet_keys
        from edgefleet.device.registry import open_registry_reader

        registry = open_registry_reader(config.registry)
        return cls(lambda: load_fleet_keys(registry), require_signed=config.require_signed,
                   refresh_s=config.refresh_s)

    def problem(self, data: bytes, attributes: Mapping[str, str]) -> str | None:
        """Why the message must be refused (starts with FORGED_PREFIX), or None."""
        return self.check(data, attributes).problem

    def check(self, data: bytes, attributes: Mapping[str, str]) -> Verdict:
        """The verdict on one message (the caller bounds its size first: the body is parsed here)."""
        device_id = body_device_id(data)
        if device_id is None:
            return Verdict(None)  # names no device: not a telemetry message, ingest refuses it as malformed
        claimed = attributes.get(ATTR_DEVICE_ID) or ""
        if claimed and claimed != device_id:
            return Verdict(f"{FORGED_PREFIX}the device_id attribute {claimed[:64]!r} names another device than "
                           f"the message body ({device_id[:64]!r})", device_id=device_id)
        signed = bool(attributes.get(ATTR_SIGNATURE))
        key = self._key(device_id)
        if key is None:
            if self.require_signed:
                what = "signed message from" if signed else "unsigned message from"
                return Verdict(f"{FORGED_PREFIX}{what} {device_id[:64]}, which has no key in the fleet",
                               device_id=device_id)
            return Verdict(None, device_id=device_id)  # transition: a device without a key, unverified
        problem = telemetry_signature_problem(key, data, {**attributes, ATTR_DEVICE_ID: device_id})
        if problem is not None:
            return Verdict(FORGED_PREFIX + problem, device_id=device_id)
        return Verdict(None, verified=True, device_id=device_id)

    def _key(self, device_id: str) -> Ed25519PublicKey | None:
        with self._lock:
            now = self._clock()
            key = self._keys.get(device_id)
            # Re-read at most every refresh_s: new devices are learnt, removed (stolen) ones forgotten; a device
            # not known yet re-reads sooner, so a device registered just now is not refused for long.
            interval = self.refresh_s if key is not None else min(self.refresh_s, UNKNOWN_DEVICE_REFRESH_S)
            if self._loaded_at is None or now - self._loaded_at >= interval:
                try:
                    self._keys = dict(self._load_keys())
                except Exception:  # noqa: BLE001 - keep the keys we have; unknown devices wait for the next try
                    log.warning("could not load the fleet's device keys", exc_info=True)
                self._loaded_at = now
                key = self._keys.get(device_id)
            return key
