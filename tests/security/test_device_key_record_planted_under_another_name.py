"""Issue 20, item 7: a registry (bucket) writer added `fleet/devices/zz-cam-1-backup.json` naming `cam-1` with
their own key, and the monitor took the body's `device_id`: the attacker became `cam-1`, even with
`require_signed` (the later file won). Now a record speaks only for the device its file is named after, and only
when the fleet enrolment key signed it.

The paths beside it: a record copied from another device (signed, but naming that device); a record signed by a
stolen device key instead of the enrolment key; a signed record edited after signing; and the same planted file
under the transition setting that still accepts unsigned records (the file name rule holds there too)."""

from __future__ import annotations

import json

from edgefleet.kernel.contracts.devicekey import DeviceKeyRecord, sign_record
from edgefleet.kernel.trust.signatures import generate_keypair
from tests.security.device_keys import Fleet, applied, refused, unsigned_record


def test_a_record_planted_under_another_name_does_not_make_its_writer_that_device(fleet: Fleet, fleet_state) -> None:
    cam1 = fleet.enrol("cam-1")
    attacker, _ = generate_keypair()
    fleet.plant("zz-cam-1-backup.json", unsigned_record("cam-1", attacker))
    monitor = fleet.monitor()
    assert refused(fleet.send(fleet_state, monitor, "cam-1", attacker))
    assert applied(fleet.send(fleet_state, monitor, "cam-1", cam1))  # the real cam-1 keeps its key
    [planted] = monitor.refused_records
    assert "zz-cam-1-backup.json" in planted.record and "names device cam-1" in planted.reason


def test_the_file_name_rule_holds_under_the_transition_setting_too(fleet: Fleet, fleet_state) -> None:
    cam1 = fleet.enrol("cam-1")
    attacker, _ = generate_keypair()
    fleet.plant("zz-cam-1-backup.json", unsigned_record("cam-1", attacker))
    monitor = fleet.monitor(accept_unsigned_key_records=True, require_signed=False)
    assert refused(fleet.send(fleet_state, monitor, "cam-1", attacker))
    assert applied(fleet.send(fleet_state, monitor, "cam-1", cam1))


def test_a_signed_record_copied_from_another_device_speaks_for_nobody(fleet: Fleet, fleet_state) -> None:
    cam2 = fleet.enrol("cam-2")
    copied = (fleet.devices_dir / "cam-2.json").read_text()
    fleet.plant("cam-1.json", copied)  # replayed as cam-1's record
    fleet.plant("zz-cam-2-backup.json", copied)  # and as a second record of cam-2
    monitor = fleet.monitor()
    assert refused(fleet.send(fleet_state, monitor, "cam-1", cam2))
    assert applied(fleet.send(fleet_state, monitor, "cam-2", cam2))
    assert len(monitor.refused_records) == 2


def test_a_record_signed_by_a_stolen_device_key_is_refused(fleet: Fleet, fleet_state) -> None:
    cam1 = fleet.enrol("cam-1")
    stolen = fleet.enrol("cam-2")  # the attacker holds cam-2's device key and writes to the bucket
    attacker, _ = generate_keypair()
    forged = sign_record(stolen, DeviceKeyRecord.model_validate(unsigned_record("cam-1", attacker)))
    fleet.plant("cam-1.json", forged.model_dump(mode="json", by_alias=True))
    monitor = fleet.monitor()
    assert refused(fleet.send(fleet_state, monitor, "cam-1", attacker))
    assert refused(fleet.send(fleet_state, monitor, "cam-1", cam1))  # cam-1's record is gone: refused, not hijacked
    assert applied(fleet.send(fleet_state, monitor, "cam-2", stolen))
    [record] = monitor.refused_records
    assert "not a fleet enrolment key" in record.reason


def test_a_signed_record_edited_after_signing_is_refused(fleet: Fleet, fleet_state) -> None:
    fleet.enrol("cam-1")
    attacker, _ = generate_keypair()
    document = json.loads((fleet.devices_dir / "cam-1.json").read_text())
    document |= {key: value for key, value in unsigned_record("cam-1", attacker).items() if key != "schema"}
    fleet.plant("cam-1.json", document)
    monitor = fleet.monitor()
    assert refused(fleet.send(fleet_state, monitor, "cam-1", attacker))
    [record] = monitor.refused_records
    assert "does not hold" in record.reason


def test_the_planted_record_is_refused_on_gcs_too(tmp_path, gcs_client, gcs_bucket, gcs_registry, fleet_state) -> None:
    """The same attack against the GCS emulator (the monitor reads `gs://` as in production), and an object too
    large to be a record refused before download."""
    bucket = gcs_client.bucket(gcs_bucket)
    fleet = Fleet(tmp_path, gcs_registry,
                  lambda key, data: bucket.blob(f"registry/{key}").upload_from_string(data))
    cam1 = fleet.enrol("cam-1")
    attacker, _ = generate_keypair()
    fleet.plant("zz-cam-1-backup.json", unsigned_record("cam-1", attacker))
    fleet.plant("zz-huge.json", {"padding": "x" * 100_000})
    monitor = fleet.monitor()
    assert monitor is not None and fleet.config().registry.startswith("gs://")
    assert refused(fleet.send(fleet_state, monitor, "cam-1", attacker))
    assert applied(fleet.send(fleet_state, monitor, "cam-1", cam1))
    reasons = sorted(record.reason for record in monitor.refused_records)
    assert len(reasons) == 2 and "names device cam-1" in reasons[0] and "more than the 4096" in reasons[1]


def test_enrolling_again_rewrites_a_record_the_enrolment_key_did_not_sign(fleet: Fleet, fleet_state) -> None:
    """A record with the device's own public key but another signer is not taken as "already enrolled"."""
    cam1 = fleet.enrol("cam-1")
    other, _ = generate_keypair()
    foreign = sign_record(other, DeviceKeyRecord.model_validate(unsigned_record("cam-1", cam1)))
    fleet.plant("cam-1.json", foreign.model_dump(mode="json", by_alias=True))
    assert refused(fleet.send(fleet_state, fleet.monitor(), "cam-1", cam1))
    fleet.enrol("cam-1", cam1)  # deploy-agent runs again: same key, now signed by the enrolment key
    assert applied(fleet.send(fleet_state, fleet.monitor(), "cam-1", cam1))
