"""The monitor's table of device keys: read from the registry, refreshed, looked up (issues 11, 20 and 23).

Every key is re-read every `refresh_s` (a device removed or revoked counts from then on); a device without a key
is looked up alone (`load_device`: its record and a revocation of its key), at most every `unknown_refresh_s`
fleet-wide, so a device enrolled a moment ago is not refused for a minute. A refused record drops its device
only; a revocation once seen holds while the monitor runs.

The monitor re-reads the keys on a background thread (`start_refreshing`; issue 23: at 10,000 devices on GCS a
read on the message path stopped ingest for minutes): the message path only reads the table, which a refresh
swaps in whole, and waits for the registry only in the one-device look-up (a few small reads, made without the
lock: other messages go on). A refresh re-reads only the records that changed (`FleetKeyReader`). One read
stays on the message path: the first message after the start re-reads the keys, as it always did, so devices
enrolled between the start and that message are all known at once; after the start's full read that is a
listing and the records enrolled since. Without `start_refreshing` (a library use, most tests) a message that
finds the keys due re-reads them itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edgefleet.kernel.errors import EdgefleetError
from edgefleet.kernel.trust.signatures import key_id
from edgefleet.monitor.device_key_reader import FleetKeys, RefusedRecord
from edgefleet.monitor.errors import MonitorError

log = logging.getLogger(__name__)

UNKNOWN_DEVICE_REFRESH_S = 5.0
"""A device without a key triggers a look-up of its key at most this often (fleet-wide, not per device)."""
REFRESHER_STOP_WAIT_S = 5.0
"""How long stopping the background refresh waits for a read in flight (then leaves its daemon thread)."""

KEYS_READ_FIX = "make the fleet's device keys readable by the monitor (identity.registry)"


class DeviceKeyTable:
    """device_id -> the key its messages must be signed with (see the module docstring).

    Args:
        load_keys: returns the fleet's keys: a `FleetKeys` (a `FleetKeyReader` of a registry, which re-reads
            only what changed) or a plain device_id -> public key mapping.
        refresh_s: the keys are re-read this often (`start_refreshing`; without it, by the first message after).
        unknown_refresh_s: a device without a key triggers a look-up at most this often (fleet-wide).
        load_device: reads one device's key (`load_device_key`: device id, revoked key ids); None: a look-up
            re-reads every key.
        clock: monotonic seconds.
        keys_location: where the keys are read from (`gs://bucket/prefix/fleet/devices/`), for errors.
        keys_fix: what to do when they cannot be read (the IAM grant on that prefix), for errors.
    """

    def __init__(self, load_keys: Callable[[], FleetKeys | Mapping[str, Ed25519PublicKey]], *,
                 refresh_s: float = 60.0,
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

    def load_now(self) -> None:
        """Reads the fleet's keys now: the monitor's start, which must not go on without them (every signed
        message would be refused and dead-lettered).

        Raises:
            MonitorError: the keys cannot be read, naming where and the IAM fix.
        """
        with self._refresh_lock:  # the key source is never read by two threads at once
            try:
                loaded = self._load_keys()
            except Exception as error:  # noqa: BLE001 - whatever it is, the monitor must not start blind
                raise MonitorError(self._load_failure(error), self.keys_fix) from error
            with self._lock:
                self._apply(loaded)
                # Not marked as a read: the first message re-reads the keys, as before, so the devices enrolled
                # between the start and that message are all known (not looked up one by one, 5 s apart). With
                # a `FleetKeyReader` that read is a listing and the records new since the start.
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

        The first message after `load_now` re-reads the keys (those enrolled since the start; once). Without a
        background refresh every key is re-read every refresh_s (new devices learnt, removed or revoked ones
        forgotten). A device without a key is looked up sooner (one enrolled since), at most every
        unknown_refresh_s fleet-wide: its own record (`load_device`), or every key without `load_device`."""
        if self._loaded_at is None or (self._refresher is None and now - self._loaded_at >= self.refresh_s):
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
