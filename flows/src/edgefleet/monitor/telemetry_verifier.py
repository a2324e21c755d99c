"""Whose telemetry the monitor accepts: each device signs its messages with its own key (issues 11 and 20).

The fleet's device public keys come from the registry (`fleet/devices/<id>.json`, signed by the fleet enrolment
key: `edgefleet.monitor.device_key_reader`), kept in a `DeviceKeyTable` (`edgefleet.monitor.device_key_table`): re-read
every `refresh_s` in the background, only what changed (a device removed or revoked counts from then on); a device
without a key is looked up alone (its record, and a revocation of its key), at most every `unknown_refresh_s`
fleet-wide, so a device enrolled a moment ago is not refused for a minute. A refused record drops its device
only; a revocation once seen holds while the monitor runs.

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from edgefleet.device.registry.base import RegistryReader
from edgefleet.device.trust.device_identity import telemetry_signature_problem
from edgefleet.kernel.contracts.layout import ATTR_DEVICE_ID, ATTR_SIGNATURE, FLEET_DEVICES_PREFIX
from edgefleet.kernel.errors import ConfigError, VerificationError
from edgefleet.kernel.trust.signatures import key_id, load_public_key
from edgefleet.monitor.device_key_reader import (
    KEY_READ_WORKERS,
    FleetKeyReader,
    FleetKeys,
    KeyRecordPolicy,
    load_device_key,
)
from edgefleet.monitor.device_key_table import UNKNOWN_DEVICE_REFRESH_S, DeviceKeyTable

KEY_ID_PATTERN = r"^[0-9a-f]{16,64}$"
MAX_KEY_READ_WORKERS = 10
"""A GCS client keeps 10 connections: more readers would open and drop connections."""

FORGED_PREFIX = "unauthenticated: "
"""Reasons of refused (forged or unverifiable) messages start with this; the monitor counts them apart."""

IdentityMode = Literal["strict", "transition"]
UPGRADE_DOC = "README, 'Upgrading a fleet that ran the old defaults'"


_BOOL = TypeAdapter(bool)


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
    refresh_s: float = Field(default=60.0, gt=0, description="re-read device keys this often, in the background "
                             "(only the records changed since: GCS generations)")
    read_workers: int = Field(default=KEY_READ_WORKERS, ge=1, le=MAX_KEY_READ_WORKERS,
                              description="device key records read at once (the first read of a large fleet)")
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

    @model_validator(mode="before")
    @classmethod
    def _mode_from_require_signed(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        mode, required = data.get("mode"), data.get("require_signed")
        if required is not None:  # as the field reads it ("no", 0, "false"...), so the two can never disagree
            required = _BOOL.validate_python(required)
        if mode is None:
            mode = "transition" if required is False else "strict"
        if required is None:
            required = mode == "strict"
        if required is not (mode == "strict"):
            raise ValueError(f"identity.require_signed: {str(required).lower()} contradicts identity.mode: {mode} "
                             "(drop require_signed: mode says it)")
        if mode != "transition" and _BOOL.validate_python(data.get("accept_unsigned_key_records", False)):
            raise ValueError("identity.accept_unsigned_key_records is a transition setting: it lets a registry "
                             "writer add a device, so it needs identity.mode: transition (or sign the records: "
                             "edgefleet fleet keys sign, then drop it)")
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
class TelemetryVerdict:
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


class TelemetryVerifier(DeviceKeyTable):
    """Checks the signature of each message against the fleet's device keys (see the module docstring).

    Args:
        load_keys: the fleet's keys (`DeviceKeyTable`).
        require_signed: strict mode (the default): refuse unsigned messages and devices without a key.
        options: the key table's (`DeviceKeyTable`: refresh_s, unknown_refresh_s, load_device, clock,
            keys_location, keys_fix).
    """

    def __init__(self, load_keys: Callable[[], FleetKeys | Mapping[str, Ed25519PublicKey]], *,
                 require_signed: bool = True, **options: Any) -> None:
        super().__init__(load_keys, **options)
        self.require_signed = require_signed

    @classmethod
    def from_config(cls, config: IdentityConfig) -> TelemetryVerifier | None:
        """The verifier `config` asks for; None only in transition mode without a registry.

        Raises:
            ConfigError: strict mode (the default) without a registry.
        """
        registry_uri = config.checked().registry
        if registry_uri is None:
            return None
        from edgefleet.device.registry import open_registry_reader

        policy = key_record_policy(config)
        registry = open_registry_reader(registry_uri)
        return cls(FleetKeyReader(registry, policy, read_workers=config.read_workers),
                   require_signed=config.require_signed,
                   refresh_s=config.refresh_s, unknown_refresh_s=config.unknown_refresh_s,
                   load_device=lambda device_id, revoked: load_device_key(registry, policy, device_id, revoked),
                   keys_location=registry.describe(f"{FLEET_DEVICES_PREFIX}/"), keys_fix=keys_read_fix(registry))

    def problem(self, data: bytes, attributes: Mapping[str, str]) -> str | None:
        """Why the message must be refused (starts with FORGED_PREFIX), or None."""
        return self.check(data, attributes).problem

    def check(self, data: bytes, attributes: Mapping[str, str]) -> TelemetryVerdict:
        """The verdict on one message (the caller bounds its size first: the body is parsed here)."""
        device_id = body_device_id(data)
        if device_id is None:
            return TelemetryVerdict(None)  # names no device: not a telemetry message, ingest refuses it as malformed
        claimed = attributes.get(ATTR_DEVICE_ID) or ""
        if claimed and claimed != device_id:
            return TelemetryVerdict(f"{FORGED_PREFIX}the device_id attribute {claimed[:64]!r} names another device "
                                    f"than the message body ({device_id[:64]!r})", device_id=device_id)
        signed = bool(attributes.get(ATTR_SIGNATURE))
        key = self._key(device_id)
        if key is None:
            if self.require_signed:
                what = "signed message from" if signed else "unsigned message from"
                return TelemetryVerdict(f"{FORGED_PREFIX}{what} {device_id[:64]}, which has no key in the fleet",
                                        device_id=device_id)
            return TelemetryVerdict(None, device_id=device_id)  # transition: a device without a key, unverified
        problem = telemetry_signature_problem(key, data, {**attributes, ATTR_DEVICE_ID: device_id})
        if problem is not None:
            return TelemetryVerdict(FORGED_PREFIX + problem, device_id=device_id)
        return TelemetryVerdict(None, verified=True, device_id=device_id)


def keys_read_fix(registry: RegistryReader) -> str:
    """The fix when the monitor cannot read the device keys: the IAM grant on the registry's `fleet/` prefix."""
    bucket, prefix = getattr(registry, "bucket_name", None), getattr(registry, "prefix", "")
    if bucket is None:
        return f"make {registry.describe(FLEET_DEVICES_PREFIX)} readable by the monitor's user"
    objects = f"projects/_/buckets/{bucket}/objects/{prefix + '/' if prefix else ''}fleet/"
    return (f"give the monitor's service account roles/storage.objectViewer on bucket {bucket} with the IAM "
            f"condition resource.name.startsWith(\"{objects}\") (the fleet infra's `pulumi up` grants it), and "
            "check that identity.registry names the registry deploy-agent registers device keys in")


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
