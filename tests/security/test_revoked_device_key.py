"""Issue 20, item 7: a device key could not be revoked (deleting the record was the only way, and any bucket
writer could put it back). Now a revocation is a record signed by the enrolment key
(`fleet/revoked/<key_id>.json`, `edgefleet fleet keys revoke`), and the monitor refuses the key from its next
refresh; a re-imaged device enrolled with `replace` revokes its old key.

What holds when a bucket writer attacks the revocation:
- removing the revocation file: a running monitor keeps refusing the key (a revocation seen once holds for the
  monitor's lifetime); a monitor started afterwards does not see it: for a revocation no bucket writer can undo,
  list the key id in the monitor's `identity.revoked_keys` (tested here too);
- planting an unsigned revocation: ignored (it would let a bucket writer switch devices off; they can delete
  records anyway, but a record is not trusted because it sits in the bucket);
- replaying the old record of a re-imaged device: refused (its key was revoked by the replacement)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from edgefleet.cli import app
from edgefleet.flows.trust.device_key_records import register_device_key, revoke_device
from edgefleet.kernel.errors import ConflictError
from edgefleet.kernel.trust.signatures import generate_keypair, key_id, save_private_key
from edgefleet.monitor.device_key_reader import load_fleet_keys
from edgefleet.monitor.telemetry_verifier import TelemetryVerifier, key_record_policy
from tests.security.device_keys import Fleet, applied, refused


def clocked_monitor(fleet: Fleet, now: list[float], **changes) -> TelemetryVerifier:
    """The monitor's verifier with its clock in the test's hand (refresh every 60 s)."""
    policy = key_record_policy(fleet.config(**changes))
    return TelemetryVerifier(lambda: load_fleet_keys(fleet.registry, policy), require_signed=True, refresh_s=60.0,
                             clock=lambda: now[0])


def test_a_revoked_device_is_refused_from_the_next_refresh(fleet: Fleet, fleet_state) -> None:
    cam1, cam2 = fleet.enrol("cam-1"), fleet.enrol("cam-2")
    now = [0.0]
    monitor = clocked_monitor(fleet, now)
    assert applied(fleet.send(fleet_state, monitor, "cam-1", cam1))
    revocation = revoke_device(fleet.registry, "cam-1", enrolment_key=fleet.enrolment, reason="stolen")
    assert revocation.key_id == key_id(cam1.public_key())
    now[0] = 61.0
    assert refused(fleet.send(fleet_state, monitor, "cam-1", cam1))
    assert applied(fleet.send(fleet_state, monitor, "cam-2", cam2))
    assert any("revoked" in record.reason for record in monitor.refused_records)


def test_a_removed_revocation_still_holds_in_a_running_monitor_and_in_the_config(fleet: Fleet, fleet_state) -> None:
    cam1 = fleet.enrol("cam-1")
    revoke_device(fleet.registry, "cam-1", enrolment_key=fleet.enrolment)
    now = [0.0]
    monitor = clocked_monitor(fleet, now)
    assert refused(fleet.send(fleet_state, monitor, "cam-1", cam1))
    for path in fleet.revoked_dir.iterdir():
        path.unlink()  # the bucket writer removes the revocation
    now[0] = 61.0
    assert refused(fleet.send(fleet_state, monitor, "cam-1", cam1))
    assert any("revocation is gone" in record.reason for record in monitor.refused_records)
    # A monitor started now no longer sees it in the registry; the config's list holds regardless.
    assert applied(fleet.send(fleet_state, fleet.monitor(), "cam-1", cam1))
    pinned = fleet.monitor(revoked_keys=(key_id(cam1.public_key()),))
    assert refused(fleet.send(fleet_state, pinned, "cam-1", cam1))


def test_an_unsigned_or_misnamed_revocation_is_ignored(fleet: Fleet, fleet_state) -> None:
    cam1, cam2 = fleet.enrol("cam-1"), fleet.enrol("cam-2")
    real = revoke_device(fleet.registry, "cam-2", enrolment_key=fleet.enrolment)
    (fleet.revoked_dir / f"{real.key_id}.json").unlink()
    document = real.model_dump(mode="json", by_alias=True)
    cam1_id = key_id(cam1.public_key())
    (fleet.revoked_dir / f"{cam1_id}.json").write_text(json.dumps(document | {"key_id": cam1_id}))  # re-aimed
    (fleet.revoked_dir / "0123456789abcdef.json").write_text(json.dumps(document))  # misnamed copy
    monitor = fleet.monitor()
    assert applied(fleet.send(fleet_state, monitor, "cam-1", cam1))
    assert applied(fleet.send(fleet_state, monitor, "cam-2", cam2))
    assert len(monitor.refused_records) == 2


def test_a_replaced_key_is_revoked_so_the_old_record_replayed_is_refused(fleet: Fleet, fleet_state) -> None:
    old = fleet.enrol("cam-1")
    old_record = (fleet.devices_dir / "cam-1.json").read_text()
    new, _ = generate_keypair()
    with pytest.raises(ConflictError, match="compromised"):
        fleet.enrol("cam-1", new)
    fleet.enrol("cam-1", new, replace=True)  # re-imaged: the old key is revoked with it
    fleet.plant("cam-1.json", old_record)  # the bucket writer replays the old (signed) record
    monitor = fleet.monitor()
    assert refused(fleet.send(fleet_state, monitor, "cam-1", old))
    with pytest.raises(ConflictError, match="revoked"):
        register_device_key(fleet.registry, "cam-9", old.public_key(), enrolment_key=fleet.enrolment)
    fleet.enrol("cam-1", new, replace=True)
    assert applied(fleet.send(fleet_state, fleet.monitor(), "cam-1", new))


def test_the_cli_revokes_a_device(fleet: Fleet, fleet_state) -> None:
    cam1 = fleet.enrol("cam-1")
    key_file = save_private_key(fleet.enrolment, fleet.root / "enrolment.key")
    result = CliRunner().invoke(app, ["fleet", "keys", "revoke", "cam-1", "--reason", "stolen", "--registry",
                                      str(fleet.registry.root), "--enrolment-key", str(key_file)])
    assert result.exit_code == 0, result.output
    assert key_id(cam1.public_key()) in result.output and "identity.revoked_keys" in result.output
    assert refused(fleet.send(fleet_state, fleet.monitor(), "cam-1", cam1))
    listed = CliRunner().invoke(app, ["fleet", "keys", "list", "--registry", str(fleet.registry.root),
                                      "--enrolment-public-key", str(fleet.enrolment_public)])
    assert listed.exit_code == 0 and "REFUSED" in listed.output and "1 revoked" in listed.output


def test_a_device_whose_record_is_damaged_is_revoked_by_key_id_as_the_error_says(fleet: Fleet, fleet_state) -> None:
    """The fix text of a device without a readable record names `--key-id`: the CLI has it."""
    cam1 = fleet.enrol("cam-1")
    fleet.plant("cam-1.json", {"schema": "edgefleet.device-key/2", "garbage": True})
    key_file = save_private_key(fleet.enrolment, fleet.root / "enrolment.key")
    common = ["--registry", str(fleet.registry.root), "--enrolment-key", str(key_file)]
    by_device = CliRunner().invoke(app, ["fleet", "keys", "revoke", "cam-1", *common])
    assert by_device.exit_code != 0 and "--key-id" in by_device.output
    by_key = CliRunner().invoke(app, ["fleet", "keys", "revoke", "cam-1", "--key-id", key_id(cam1.public_key()),
                                      *common])
    assert by_key.exit_code == 0, by_key.output
    assert key_id(cam1.public_key()) in by_key.output
    assert fleet.registry.get_json(f"fleet/revoked/{key_id(cam1.public_key())}.json") is not None
