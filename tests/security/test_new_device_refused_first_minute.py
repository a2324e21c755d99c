"""Issue 20, item 7: a device enrolled a moment ago had its first messages refused until the monitor's next key
refresh (`refresh_s`, 60 s): with signatures required, every new device lost its first minute of telemetry (and
dead-lettered it). Now a message from a device without a key re-reads the registry first, at most every
`unknown_refresh_s` (fleet-wide: a flood of made-up device ids costs one read per interval, not one per message).
"""

from __future__ import annotations

from edgefleet.monitor.fleetkeys import load_fleet_keys
from edgefleet.monitor.identity import TelemetryVerifier, key_record_policy
from tests.security.device_keys import Fleet, applied, refused

REFRESH_S = 60.0
UNKNOWN_REFRESH_S = 5.0


class CountingMonitor:
    """The monitor's verifier over the fleet's registry, its clock in the test's hand, counting registry reads."""

    def __init__(self, fleet: Fleet) -> None:
        self.now = 0.0
        self.reads = 0
        policy = key_record_policy(fleet.config())

        def load():
            self.reads += 1
            return load_fleet_keys(fleet.registry, policy)

        self.verifier = TelemetryVerifier(load, require_signed=True, refresh_s=REFRESH_S,
                                          unknown_refresh_s=UNKNOWN_REFRESH_S, clock=lambda: self.now)


def test_a_device_enrolled_after_the_last_refresh_is_accepted_at_once(fleet: Fleet, fleet_state) -> None:
    cam1 = fleet.enrol("cam-1")
    monitor = CountingMonitor(fleet)
    assert applied(fleet.send(fleet_state, monitor.verifier, "cam-1", cam1))
    monitor.now = 10.0  # well before the next refresh
    cam2 = fleet.enrol("cam-2")
    assert applied(fleet.send(fleet_state, monitor.verifier, "cam-2", cam2))
    assert monitor.reads == 2


def test_unknown_devices_reread_the_registry_at_most_every_interval(fleet: Fleet, fleet_state) -> None:
    cam1 = fleet.enrol("cam-1")
    monitor = CountingMonitor(fleet)
    assert applied(fleet.send(fleet_state, monitor.verifier, "cam-1", cam1))
    monitor.now = 10.0
    for number in range(50):  # made-up devices, signed by some key: refused, and one read for all of them
        assert refused(fleet.send(fleet_state, monitor.verifier, f"ghost-{number}", cam1))
    assert monitor.reads == 2
    monitor.now = 10.0 + UNKNOWN_REFRESH_S / 2
    cam2 = fleet.enrol("cam-2")  # enrolled within the interval: waits for its end, not for the next minute
    assert refused(fleet.send(fleet_state, monitor.verifier, "cam-2", cam2))
    monitor.now = 10.0 + UNKNOWN_REFRESH_S
    assert applied(fleet.send(fleet_state, monitor.verifier, "cam-2", cam2))
    assert monitor.reads == 3
    monitor.now = 10.0 + UNKNOWN_REFRESH_S + 1
    for _ in range(10):  # known devices never trigger a read before the refresh is due
        assert applied(fleet.send(fleet_state, monitor.verifier, "cam-1", cam1))
    assert monitor.reads == 3
