"""Issue 20, item 7: a bucket writer wrote a well-formed unsigned record for a new device (`cam-77`) with their
own key, and the monitor trusted it: a device out of nothing, speaking in every canary verdict. Now device key
records are signed by the fleet enrolment key (`edgefleet.device-key/2`); an unsigned `/1` record is trusted
only under the explicit transition setting, and the refusal says how to sign the existing records (after
looking at them: `edgefleet fleet keys sign` shows them first)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from edgefleet.cli import app
from edgefleet.flows.trust.device_key_records import sign_records, unsigned_records
from edgefleet.kernel.errors import ConfigError, ConflictError
from edgefleet.kernel.trust.signatures import generate_keypair, save_private_key
from edgefleet.monitor.telemetry_verifier import IdentityConfig, TelemetryVerifier
from tests.security.device_keys import Fleet, applied, refused, unsigned_record


def test_an_unsigned_record_for_a_new_device_is_not_trusted(fleet: Fleet, fleet_state) -> None:
    attacker, _ = generate_keypair()
    fleet.plant("cam-77.json", unsigned_record("cam-77", attacker))
    monitor = fleet.monitor()
    assert refused(fleet.send(fleet_state, monitor, "cam-77", attacker))
    [record] = monitor.refused_records
    assert "unsigned" in record.reason and "edgefleet fleet keys sign" in record.fix
    assert "accept_unsigned_key_records" in record.fix  # the transition setting is named, as a transition


def test_unsigned_records_are_trusted_only_under_the_transition_setting(fleet: Fleet, fleet_state) -> None:
    old, _ = generate_keypair()
    fleet.plant("cam-1.json", unsigned_record("cam-1", old))  # enrolled before signed records
    transition = fleet.monitor(accept_unsigned_key_records=True, require_signed=False)
    assert applied(fleet.send(fleet_state, transition, "cam-1", old))
    assert refused(fleet.send(fleet_state, fleet.monitor(), "cam-1", old))


def test_a_monitor_checking_records_needs_an_enrolment_key(fleet: Fleet) -> None:
    with pytest.raises(ConfigError, match="enrolment_keys"):
        TelemetryVerifier.from_config(IdentityConfig(registry=str(fleet.registry.root)))
    missing = fleet.root / "nowhere.pub"
    with pytest.raises(ConfigError, match="nowhere.pub"):
        TelemetryVerifier.from_config(fleet.config(enrolment_keys=(str(missing),)))


def test_existing_records_are_signed_after_being_shown_and_only_as_shown(fleet: Fleet, fleet_state) -> None:
    cam1, cam2, attacker = (generate_keypair()[0] for _ in range(3))
    fleet.plant("cam-1.json", unsigned_record("cam-1", cam1))
    fleet.plant("cam-2.json", unsigned_record("cam-2", cam2))
    fleet.plant("zz-cam-1-backup.json", unsigned_record("cam-1", attacker))
    fleet.plant("cam-3.json", "{not json")
    pending, skipped = unsigned_records(fleet.registry)
    assert [item.record.device_id for item in pending] == ["cam-1", "cam-2"]
    assert sorted(key for key, _ in skipped) == ["fleet/devices/cam-3.json", "fleet/devices/zz-cam-1-backup.json"]
    fleet.plant("cam-2.json", unsigned_record("cam-2", attacker))  # changed after it was shown
    with pytest.raises(ConflictError):
        sign_records(fleet.registry, pending, enrolment_key=fleet.enrolment)
    monitor = fleet.monitor()
    assert applied(fleet.send(fleet_state, monitor, "cam-1", cam1))  # signed before the conflict
    assert refused(fleet.send(fleet_state, monitor, "cam-2", attacker))  # never signed


def test_the_cli_shows_the_records_and_signs_only_when_told(fleet: Fleet, fleet_state) -> None:
    cam1, attacker = generate_keypair()[0], generate_keypair()[0]
    fleet.plant("cam-1.json", unsigned_record("cam-1", cam1))
    fleet.plant("zz-cam-1-backup.json", unsigned_record("cam-1", attacker))
    key_file = save_private_key(fleet.enrolment, fleet.root / "enrolment.key")
    command = ["fleet", "keys", "sign", "--registry", str(fleet.registry.root), "--enrolment-key", str(key_file)]
    declined = CliRunner().invoke(app, command, input="n\n")
    assert declined.exit_code == 1 and "cam-1" in declined.output and "NOT SIGNED" in declined.output
    assert refused(fleet.send(fleet_state, fleet.monitor(), "cam-1", cam1))
    accepted = CliRunner().invoke(app, command, input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert "signed 1 records" in accepted.output
    assert applied(fleet.send(fleet_state, fleet.monitor(), "cam-1", cam1))
    assert refused(fleet.send(fleet_state, fleet.monitor(), "cam-1", attacker))


def test_the_local_fleet_enrols_its_devices_with_signed_records(tmp_path, fleet_state) -> None:
    from edgefleet.device.trust.device_identity import load_or_create_device_key
    from edgefleet.local.fleet import SimulatedFleet

    registry = Fleet(tmp_path)
    simulated = SimulatedFleet(tmp_path / "fleet", 2, key_registry=str(registry.registry.root))
    for device_id in simulated.devices:
        simulated.publish_device_key(device_id)
    monitor = registry.monitor(enrolment_keys=(str(simulated.enrolment_public_key()),))
    for device_id, device in simulated.devices.items():
        assert applied(registry.send(fleet_state, monitor, device_id, load_or_create_device_key(device.root)))
    assert not monitor.refused_records


def test_a_fleet_enrolled_before_signed_records_moves_on_without_a_device_refused(fleet: Fleet, fleet_state) -> None:
    """The README's upgrade steps: the monitor first (enrolment key + transition setting), then sign the existing
    records, then the secure default; every device's telemetry is applied at every step."""
    devices = {name: generate_keypair()[0] for name in ("cam-1", "cam-2")}
    for name, key in devices.items():
        fleet.plant(f"{name}.json", unsigned_record(name, key))  # what the old deploy-agent wrote

    def all_applied(monitor: TelemetryVerifier) -> bool:
        return all(applied(fleet.send(fleet_state, monitor, name, key)) for name, key in devices.items())

    transition = TelemetryVerifier.from_config(fleet.config(accept_unsigned_key_records=True, require_signed=False,
                                                            refresh_s=1e-9))
    assert transition is not None and all_applied(transition)  # 1. the monitor upgraded, in transition
    pending, skipped = unsigned_records(fleet.registry)  # 2. shown, checked, signed
    assert not skipped and sign_records(fleet.registry, pending, enrolment_key=fleet.enrolment)
    assert all_applied(transition)
    devices["cam-3"] = fleet.enrol("cam-3")  # the upgraded deploy-agent enrols the next device signed
    assert all_applied(transition)
    assert all_applied(fleet.monitor())  # 3. the secure default


def test_the_development_enrolment_key_is_refused_for_a_cloud_registry(tmp_path) -> None:
    from edgefleet.flows.trust.device_key_records import EnrolmentKeyParams, resolve_enrolment_key

    params = EnrolmentKeyParams(dev_key_file=str(tmp_path / "enrolment.key"))
    with pytest.raises(ConfigError, match="not used for cloud registries"):
        resolve_enrolment_key(params, registry_uri="gs://bucket/edgefleet")
    with pytest.raises(ConfigError, match="no development key"):
        resolve_enrolment_key(params, registry_uri=str(tmp_path / "registry"), create=False)
    made = resolve_enrolment_key(params, registry_uri=str(tmp_path / "registry"))  # local: made once, 0600
    assert (tmp_path / "enrolment.key").stat().st_mode & 0o077 == 0
    again = resolve_enrolment_key(params, registry_uri=str(tmp_path / "registry"), create=False)
    assert again.public_key().public_bytes_raw() == made.public_key().public_bytes_raw()
