"""The device keys are re-read off the message path (issue 23): at 10,000 devices on GCS a full read takes
minutes, and it ran inside the verifier's lock on the message that found the keys due, holding every message.
Now a background thread refreshes them and swaps the table in whole; the one-device look-up of an unknown device
reads without the lock. Each test holds a read open (an event) and shows another message is answered meanwhile:
no timing is asserted, the bound below only ends a test that would otherwise hang."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from monitor_helpers import WAIT_S

from edgefleet.device.trust.device_identity import sign_telemetry
from edgefleet.kernel.trust.signatures import generate_keypair
from edgefleet.monitor.device_key_reader import FleetKeys
from edgefleet.monitor.telemetry_verifier import TelemetryVerdict, TelemetryVerifier
from tests.security.test_forged_telemetry import build

CAM1, _ = generate_keypair()
CAM9, _ = generate_keypair()


def _check(verifier: TelemetryVerifier, device_id: str, key: Any) -> TelemetryVerdict:
    data = build(device_id)(1).to_json_bytes()
    return verifier.check(data, {"device_id": device_id, **sign_telemetry(key, data, device_id, 1)})


def _answered(ask: Callable[[], TelemetryVerdict]) -> TelemetryVerdict | None:
    """The answer of `ask` on another thread, or None if it is still waiting after WAIT_S (a held message)."""
    answers: list[TelemetryVerdict] = []
    thread = threading.Thread(target=lambda: answers.append(ask()), daemon=True)
    thread.start()
    thread.join(WAIT_S)
    return answers[0] if answers else None


class _HeldReads:
    """A key source whose reads after the first `free` ones each wait until released (`release`)."""

    def __init__(self, keys: dict[str, Any], free: int = 1) -> None:
        self.keys, self.calls, self.released = keys, 0, free
        self._changed = threading.Condition()

    def __call__(self) -> FleetKeys:
        with self._changed:
            self.calls += 1
            number = self.calls
            self._changed.notify_all()
            self._changed.wait_for(lambda: self.released >= number, WAIT_S)
        return FleetKeys(dict(self.keys))

    def started(self, number: int) -> bool:
        """Whether read `number` has started (waiting at most WAIT_S for it)."""
        with self._changed:
            return self._changed.wait_for(lambda: self.calls >= number, WAIT_S)

    def release(self, through: int = 10**9) -> None:
        with self._changed:
            self.released = through
            self._changed.notify_all()


def test_a_message_is_answered_while_the_background_refresh_reads() -> None:
    reads = _HeldReads({"cam-1": CAM1.public_key()})
    verifier = TelemetryVerifier(reads, refresh_s=0.01)
    verifier.load_now()
    verifier.start_refreshing()
    try:
        assert reads.started(2), "the background refresh never ran"
        verdict = _answered(lambda: _check(verifier, "cam-1", CAM1))
        assert verdict is not None and verdict.verified, "the message waited for the refresh"
        assert reads.released == 1  # answered while the refresh was still reading
    finally:
        reads.release()
        verifier.stop_refreshing()


def test_a_known_device_is_answered_while_an_unknown_one_is_looked_up() -> None:
    entered, release = threading.Event(), threading.Event()

    def look_up(device_id: str, revoked: frozenset[str]) -> FleetKeys:
        entered.set()
        release.wait(WAIT_S)
        return FleetKeys({})

    verifier = TelemetryVerifier(lambda: {"cam-1": CAM1.public_key()}, refresh_s=3600.0, unknown_refresh_s=1e-9,
                                 load_device=look_up)
    verifier.load_now()
    assert _check(verifier, "cam-1", CAM1).verified
    unknown = threading.Thread(target=lambda: _check(verifier, "cam-9", CAM9), daemon=True)
    unknown.start()
    try:
        assert entered.wait(WAIT_S), "the unknown device was not looked up"
        verdict = _answered(lambda: _check(verifier, "cam-1", CAM1))
        assert verdict is not None and verdict.verified, "the message waited for another device's look-up"
    finally:
        release.set()
        unknown.join(WAIT_S)


def test_a_device_looked_up_during_a_refresh_outlives_that_refresh() -> None:
    """The refresh listed the records before the device enrolled; the look-up, made after, is newer."""
    reads = _HeldReads({"cam-1": CAM1.public_key()})
    looked_up: list[str] = []

    def look_up(device_id: str, revoked: frozenset[str]) -> FleetKeys:
        looked_up.append(device_id)
        return FleetKeys({device_id: CAM9.public_key()})

    verifier = TelemetryVerifier(reads, refresh_s=0.01, unknown_refresh_s=1e-9, load_device=look_up)
    verifier.load_now()
    verifier.start_refreshing()
    try:
        assert reads.started(2)
        assert _check(verifier, "cam-9", CAM9).verified and looked_up == ["cam-9"]
        reads.release(through=2)  # the held refresh ends (its table has no cam-9); the next one waits
        assert reads.started(3)  # so the held one has swapped its table in
        assert _check(verifier, "cam-9", CAM9).verified and looked_up == ["cam-9"]  # not dropped, not looked up
    finally:
        reads.release()
        verifier.stop_refreshing()


def test_devices_enrolled_between_the_start_and_the_first_message_are_all_known_at_once() -> None:
    """As before the background refresh: the first message re-reads the keys (not one look-up per device,
    5 s apart fleet-wide), even while the refresher waits for its first turn."""
    fleet: dict[str, Any] = {}
    looked_up: list[str] = []

    def look_up(device_id: str, revoked: frozenset[str]) -> FleetKeys:
        looked_up.append(device_id)
        return FleetKeys({})

    verifier = TelemetryVerifier(lambda: FleetKeys(dict(fleet)), refresh_s=3600.0, load_device=look_up)
    verifier.load_now()  # the start: no device enrolled yet
    verifier.start_refreshing()
    try:
        keys = {f"cam-{number}": generate_keypair()[0] for number in range(3)}
        fleet.update({device_id: key.public_key() for device_id, key in keys.items()})
        assert all(_check(verifier, device_id, key).verified for device_id, key in keys.items())
        assert looked_up == []
    finally:
        verifier.stop_refreshing()
