"""Issue 20, item 7: a device enrolled a moment ago had its first messages refused until the monitor's next key
refresh (`refresh_s`, 60 s): with signatures required, every new device lost its first minute of telemetry (and
dead-lettered it). Now a message from a device without a key looks that device up first (its record and a
revocation of its key: two small reads, not the whole fleet), at most every `unknown_refresh_s` fleet-wide: a
flood of made-up device ids costs one look-up per interval, not one per message. A revoked key is not learnt
that way either.
"""

from __future__ import annotations

from edgefleet.flows.trust.device_key_records import revoke_device
from edgefleet.kernel.trust.signatures import generate_keypair
from edgefleet.monitor.device_key_reader import load_device_key, load_fleet_keys
from edgefleet.monitor.telemetry_verifier import TelemetryVerifier, key_record_policy
from tests.security.device_keys import Fleet, applied, refused, unsigned_record

REFRESH_S = 60.0
UNKNOWN_REFRESH_S = 5.0


class CountingMonitor:
    """The monitor's verifier over the fleet's registry (the loaders `from_config` gives it), its clock in the
    test's hand, counting full reads and one-device look-ups."""

    def __init__(self, fleet: Fleet) -> None:
        self.now = 0.0
        self.reads = 0
        self.lookups = 0
        policy = key_record_policy(fleet.config())

        def load():
            self.reads += 1
            return load_fleet_keys(fleet.registry, policy)

        def look_up(device_id, revoked):
            self.lookups += 1
            return load_device_key(fleet.registry, policy, device_id, revoked)

        self.verifier = TelemetryVerifier(load, require_signed=True, refresh_s=REFRESH_S, load_device=look_up,
                                          unknown_refresh_s=UNKNOWN_REFRESH_S, clock=lambda: self.now)


def test_a_device_enrolled_after_the_last_refresh_is_accepted_at_once(fleet: Fleet, fleet_state) -> None:
    cam1 = fleet.enrol("cam-1")
    monitor = CountingMonitor(fleet)
    assert applied(fleet.send(fleet_state, monitor.verifier, "cam-1", cam1))
    monitor.now = 10.0  # well before the next refresh
    cam2 = fleet.enrol("cam-2")
    assert applied(fleet.send(fleet_state, monitor.verifier, "cam-2", cam2))
    assert (monitor.reads, monitor.lookups) == (1, 1)


def test_unknown_devices_reread_the_registry_at_most_every_interval(fleet: Fleet, fleet_state) -> None:
    cam1 = fleet.enrol("cam-1")
    monitor = CountingMonitor(fleet)
    assert applied(fleet.send(fleet_state, monitor.verifier, "cam-1", cam1))
    monitor.now = 10.0
    for number in range(50):  # made-up devices, signed by some key: refused, and one read for all of them
        assert refused(fleet.send(fleet_state, monitor.verifier, f"ghost-{number}", cam1))
    assert (monitor.reads, monitor.lookups) == (1, 1)
    monitor.now = 10.0 + UNKNOWN_REFRESH_S / 2
    cam2 = fleet.enrol("cam-2")  # enrolled within the interval: waits for its end, not for the next minute
    assert refused(fleet.send(fleet_state, monitor.verifier, "cam-2", cam2))
    monitor.now = 10.0 + UNKNOWN_REFRESH_S
    assert applied(fleet.send(fleet_state, monitor.verifier, "cam-2", cam2))
    assert (monitor.reads, monitor.lookups) == (1, 2)
    monitor.now = 10.0 + UNKNOWN_REFRESH_S + 1
    for _ in range(10):  # known devices never trigger a read before the refresh is due
        assert applied(fleet.send(fleet_state, monitor.verifier, "cam-1", cam1))
        assert applied(fleet.send(fleet_state, monitor.verifier, "cam-2", cam2))
    assert (monitor.reads, monitor.lookups) == (1, 2)
    monitor.now = REFRESH_S
    assert applied(fleet.send(fleet_state, monitor.verifier, "cam-2", cam2))
    assert (monitor.reads, monitor.lookups) == (2, 2)


def test_a_look_up_does_not_learn_a_revoked_or_unsigned_key(fleet: Fleet, fleet_state) -> None:
    monitor = CountingMonitor(fleet)
    assert refused(fleet.send(fleet_state, monitor.verifier, "cam-1", None))  # the first full read
    cam1 = fleet.enrol("cam-1")
    revoke_device(fleet.registry, "cam-1", enrolment_key=fleet.enrolment)
    monitor.now = UNKNOWN_REFRESH_S
    assert refused(fleet.send(fleet_state, monitor.verifier, "cam-1", cam1))
    attacker, _ = generate_keypair()
    fleet.plant("cam-2.json", unsigned_record("cam-2", attacker))
    monitor.now = 2 * UNKNOWN_REFRESH_S
    assert refused(fleet.send(fleet_state, monitor.verifier, "cam-2", attacker))
    assert monitor.lookups == 2
    assert [("revoked" in r.reason, "unsigned" in r.reason) for r in monitor.verifier.refused_records] == [
        (True, False), (False, True)]
