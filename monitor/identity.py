"""Whose telemetry the monitor accepts: each device signs its messages with its own key (issues 11 and 20).

The fleet's device public keys come from the registry (`fleet/devices/<id>.json`, signed by the fleet enrolment
key: `edgefleet.monitor.fleetkeys`); they are re-read every `refresh_s` (a device removed or revoked counts from
then on); a device without a key is looked up alone (its record, and a revocation of its key), at most every
`unknown_refresh_s` fleet-wide, so a device enrolled a moment ago is not refused for a minute. A refused record
drops its device only; a revocation once seen holds while the monitor runs.

The monitor re-reads the keys on a background thread (`start_refreshing`; issue 23: at 10,000 devices a read
on the message path stopped ingest for minutes): the message path only reads the key table, which a refresh
swaps in whole, and never waits for the registry except for the one-device look-up (a few small reads, without
the lock: other messages go on). A refresh re-reads only the records that changed (`FleetKeyReader`). Without
`start_refreshing` (a library use) a message that finds the keys due re-reads them itself, as before.

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
from pathlib import Path
from typing import Annotated, Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from edgefleet.device.identity import telemetry_signature_problem
from edgefleet.device.registry.base import RegistryReader
from edgefleet.kernel.contracts.layout import ATTR_DEVICE_ID, ATTR_SIGNATURE, FLEET_DEVICES_PREFIX
from edgefleet.kernel.errors import ConfigError, EdgefleetError, VerificationError
from edgefleet.kernel.signing import key_id, load_public_key
from edgefleet.monitor.errors import MonitorError
from edgefleet.monitor.fleetkeys import (
    KEY_READ_WORKERS,
    FleetKeyReader,
    FleetKeys,
    KeyRecordPolicy,
    RefusedRecord,
    load_device_key,
)

log = logging.getLogger(__name__)

KEY_ID_PATTERN = r"^[0-9a-f]{16,64}$"
UNKNOWN_DEVICE_REFRESH_S = 5.0
"""A device without a key triggers a look-up of its key at most this often (fleet-wide, not per device)."""
REFRESHER_STOP_WAIT_S = 5.0
"""How long stopping the background refresh waits for a read in flight (then leaves its daemon thread)."""

MAX_KEY_READ_WORKERS = 10
"""A GCS client keeps 10 connections: more readers would open and drop connections."""

KEYS_READ_FIX = "make the fleet's device keys readable by the monitor (identity.registry)"

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
        load_keys: returns the fleet's keys: a `FleetKeys` (a `FleetKeyReader` of a registry, which re-reads
            only what changed) or a plain device_id -> public key mapping.
        require_signed: strict mode (the default): refuse unsigned messages and devices without a key.
        refresh_s: the keys are re-read this often (`start_refreshing`; without it, by the first message after).
        unknown_refresh_s: a device without a key triggers a look-up at most this often (fleet-wide).
        load_device: reads one device's key (`load_device_key`: device id, revoked key ids); None: a look-up
            re-reads every key.
        clock: monotonic seconds.
        keys_location: where the keys are read from (`gs://bucket/prefix/fleet/devices/`), for errors.
        keys_fix: what to do when they cannot be read (the IAM grant on that prefix), for errors.
    """

    def __init__(self, load_keys: Callable[[], FleetKeys | Mapping[str, Ed25519PublicKey]], *,
                 require_signed: bool = True, refresh_s: float = 60.0,
                 unknown_refresh_s: float = UNKNOWN_DEVICE_REFRESH_S,
                 load_device: Callable[[str, frozenset[str]], FleetKeys] | None = None,
                 clock: Callable[[], float] = time.monotonic, keys_location: str = "the fleet's device keys",
                 keys_fix: str = KEYS_READ_FIX) -> None:
        self._load_keys = load_keys
        self.keys_location = keys_location
        self.keys_fix = keys_fix
        self.key_load_error: str | None = None
        """Why the last read of the keys failed (the monitor works on with the keys it has), or None."""
        self._load_device = load_device
        self._looked_up_at: float | None = None
        self.require_signed = require_signed
        self.refresh_s = refresh_s
        self.unknown_refresh_s = unknown_refresh_s
        self._clock = clock
        self._lock = threading.Lock()  # guards the state below; held for bookkeeping only, never across a read
        self._refresh_lock = threading.Lock()  # one refresh at a time
        self._keys: Mapping[str, Ed25519PublicKey] = {}  # swapped whole, never changed in place
        self._loaded_at: float | None = None
        self._revoked: set[str] = set()
        self._looked_up: dict[str, Ed25519PublicKey] = {}  # found by look-ups while a refresh runs
        self._refresher: tuple[threading.Thread, threading.Event] | None = None
        self.refused_records: tuple[RefusedRecord, ...] = ()
        """The device key records the last read refused (each device of these is refused until fixed)."""

    @classmethod
    def from_config(cls, config: IdentityConfig) -> TelemetryVerifier | None:
        """The verifier `config` asks for; None only in transition mode without a registry.

        Raises:
            ConfigError: strict mode (the default) without a registry.
        """
        if config.checked().registry is None:
            return None
        from edgefleet.device.registry import open_registry_reader

        policy = key_record_policy(config)
        registry = open_registry_reader(config.registry)
        return cls(FleetKeyReader(registry, policy, read_workers=config.read_workers),
                   require_signed=config.require_signed,
                   refresh_s=config.refresh_s, unknown_refresh_s=config.unknown_refresh_s,
                   load_device=lambda device_id, revoked: load_device_key(registry, policy, device_id, revoked),
                   keys_location=registry.describe(f"{FLEET_DEVICES_PREFIX}/"), keys_fix=keys_read_fix(registry))

    def load_now(self) -> None:
        """Reads the fleet's keys now: the monitor's start, which must not go on without them (every signed
        message would be refused and dead-lettered).

        Raises:
            MonitorError: the keys cannot be read, naming where and the IAM fix.
        """
        try:
            loaded = self._load_keys()
        except Exception as error:  # noqa: BLE001 - whatever it is, the monitor must not start blind
            raise MonitorError(self._load_failure(error), self.keys_fix) from error
        with self._lock:
            self._apply(loaded)
            if self._refresher is None:
                # Not marked as a read: the first message re-reads every key, as before, so the devices enrolled
                # between the start and that message are all known (not looked up one by one, rate-limited).
                self._loaded_at = None

    def start_refreshing(self) -> None:
        """Re-reads the keys every `refresh_s` on a daemon thread from now on (the monitor's start, after
        `load_now`): the message path then never re-reads them all. `stop_refreshing` ends it."""
        with self._lock:
            if self._refresher is not None:
                return
            stop = threading.Event()
            thread = threading.Thread(target=self._refresh_loop, args=(stop,), name="device-key-refresh",
                                      daemon=True)
            self._refresher = (thread, stop)
            self._loaded_at = self._clock()
        thread.start()

    def stop_refreshing(self, timeout_s: float = REFRESHER_STOP_WAIT_S) -> None:
        """Ends the background refresh; a read in flight is waited for at most `timeout_s` (its thread is a
        daemon: it never holds the process)."""
        with self._lock:
            refresher, self._refresher = self._refresher, None
        if refresher is not None:
            thread, stop = refresher
            stop.set()
            thread.join(timeout_s)

    def _refresh_loop(self, stop: threading.Event) -> None:
        while not stop.wait(self.refresh_s):
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - the refresher must outlive any one failure; the next one tries again
                log.exception("refreshing the fleet's device keys failed (working on with the keys read before)")

    def refresh(self) -> None:
        """Re-reads the fleet's keys now and swaps them in; a failed read keeps the keys we have
        (`key_load_error` says why). The background refresh, or a test."""
        with self._lock:
            self._loaded_at = self._looked_up_at = self._clock()
        self._refresh()

    def _load_failure(self, error: Exception) -> str:
        detail = f"{error.message} ({error.fix})" if isinstance(error, EdgefleetError) else str(error)
        return (f"the fleet monitor cannot read the device keys at {self.keys_location}: {type(error).__name__}: "
                f"{detail}; with identity checks on, every signed message would be refused and dead-lettered")

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
        now = self._clock()
        with self._lock:
            action = self._next_read(device_id, now)
        if action == "refresh":
            self._refresh()
        elif action == "look-up":
            self._look_up(device_id)
        return self._keys.get(device_id)

    def _next_read(self, device_id: str, now: float) -> Literal["refresh", "look-up"] | None:
        """What the message path reads before answering (called under the lock, which it marks as claimed).

        Without a background refresh every key is re-read every refresh_s (new devices learnt, removed or revoked
        ones forgotten). A device without a key is looked up sooner (one enrolled since), at most every
        unknown_refresh_s fleet-wide: its own record (`load_device`), or every key without `load_device`."""
        if self._refresher is None and (self._loaded_at is None or now - self._loaded_at >= self.refresh_s):
            self._loaded_at = self._looked_up_at = now
            return "refresh"
        if device_id in self._keys or (
                self._looked_up_at is not None and now - self._looked_up_at < self.unknown_refresh_s):
            return None
        self._looked_up_at = now
        if self._load_device is not None:
            return "look-up"
        self._loaded_at = now
        return "refresh"

    def _look_up(self, device_id: str) -> None:
        with self._lock:
            revoked = frozenset(self._revoked)
        try:
            found = self._load_device(device_id, revoked)  # type: ignore[misc]
        except Exception:  # noqa: BLE001 - the device waits for the next try
            log.warning("could not look up the key of device %s", device_id, exc_info=True)
            return
        with self._lock:
            self._revoked |= found.revoked
            fresh = {name: key for name, key in found.keys.items() if key_id(key) not in self._revoked}
            if fresh:
                self._keys = {**self._keys, **fresh}
                self._looked_up.update(fresh)  # newer than the listing of a refresh running meanwhile
            for record in found.refused:
                if record not in self.refused_records:
                    log.warning("device key record %s refused (its device is refused): %s (fix: %s)",
                                record.record, record.reason, record.fix)
                    self.refused_records = (*self.refused_records, record)

    def _refresh(self) -> None:
        with self._refresh_lock:
            with self._lock:
                self._looked_up = {}
            try:
                loaded = self._load_keys()
            except Exception as error:  # noqa: BLE001 - keep the keys we have; unknown devices wait for the next try
                failure = self._load_failure(error)
                with self._lock:
                    if failure != self.key_load_error:  # loud, but once per distinct cause
                        log.error("%s (working on with the %d key(s) read before); fix: %s", failure,
                                  len(self._keys), self.keys_fix)
                    self.key_load_error = failure
                return
            with self._lock:
                self._apply(loaded)

    def _apply(self, loaded: FleetKeys | Mapping[str, Ed25519PublicKey]) -> None:
        """Swaps in what a full read gave (under the lock)."""
        if self.key_load_error is not None:
            log.info("the fleet's device keys at %s are readable again", self.keys_location)
            self.key_load_error = None
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
        for device_id, key in self._looked_up.items():  # looked up after this read listed the records
            if device_id not in keys and key_id(key) not in self._revoked:
                keys[device_id] = key
        if set(refused) != set(self.refused_records):
            for record in refused:
                log.warning("device key record %s refused (its device is refused): %s (fix: %s)",
                            record.record, record.reason, record.fix)
        self._keys, self.refused_records = keys, tuple(refused)


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
