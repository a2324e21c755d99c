"""Issue 25: `pending` and `import` refuse a sample signed by a revoked device key, but labels imported BEFORE
the revocation stayed in `fleet/spotcheck-labels/<device>.json` and kept counting in `fleet status` and on the
fleet page: a stolen device's samples (the thief's choice of frames, answers and images) went on steering the
labelled accuracy after the operator revoked its key. The labelled record keeps the key id that signed each
labelled frame; the report drops the frames of a key revoked either way (a signed `fleet/revoked/<key id>.json`
in the registry, or the monitor config's `identity.revoked_keys`), and the frames of a record that does not say
which key signed them, and says how many it left out."""

from __future__ import annotations

from pathlib import Path

from edgefleet.flows.trust.device_key_records import register_device_key, revoke_device
from edgefleet.kernel.contracts.spotcheck import SpotLabels, labels_key
from edgefleet.kernel.trust.signatures import generate_keypair, key_id
from edgefleet.monitor.config import load_monitor_config
from edgefleet.monitor.query import DeviceStatus
from edgefleet.monitor.spotcheck_report import read_spot_check_report
from tests.spot_samples import MODEL, VERSION, EnrolledFleet

FRAMES = [f"20261207T210000Z-{seq:012d}" for seq in range(3)]
LATER = "20261208T090000Z-000000000000"


def _imported(tmp_path: Path, devices: tuple[str, ...] = ("stolen", "good")) -> EnrolledFleet:
    """Each device's three signed samples uploaded and labelled (imported while no key was revoked)."""
    fleet = EnrolledFleet(tmp_path, devices)
    for device in devices:
        for frame in FRAMES:
            fleet.upload(device, frame, f"{device} {frame}".encode())
    result = fleet.cli("import", fleet.labels_file([(d, f) for d in devices for f in FRAMES]))
    assert result.exit_code == 0, result.output
    return fleet


def _shown(fleet: EnrolledFleet, **identity: object) -> dict[str, int]:
    """device -> labelled frames counted in the report `fleet status` shows."""
    settings = load_monitor_config(None, identity={"registry": str(fleet.root),
                                                   "enrolment_keys": [str(fleet.enrolment_public_key)], **identity})
    devices = [DeviceStatus.model_construct(device_id=d, model_name=MODEL, model_version=VERSION, drift=None)
               for d in ("stolen", "good")]
    report = read_spot_check_report(settings, devices)
    assert report is not None and report.error is None, report
    return {result.device_id: result.labelled for result in report.devices}


def test_labels_of_a_key_revoked_in_the_registry_after_the_import_no_longer_count(tmp_path: Path) -> None:
    fleet = _imported(tmp_path)
    assert _shown(fleet) == {"stolen": 3, "good": 3}
    revoke_device(fleet.writer, "stolen", enrolment_key=fleet.enrolment, reason="stolen")
    assert _shown(fleet) == {"good": 3}


def test_labels_of_a_key_revoked_in_the_monitor_config_after_the_import_no_longer_count(tmp_path: Path) -> None:
    fleet = _imported(tmp_path)
    assert _shown(fleet, revoked_keys=[fleet.key_id("stolen")]) == {"good": 3}


def test_after_re_enrolment_only_the_new_keys_labels_count(tmp_path: Path) -> None:
    fleet = _imported(tmp_path)
    revoke_device(fleet.writer, "stolen", enrolment_key=fleet.enrolment, reason="stolen")
    new_key, new_public = generate_keypair()
    old_key = fleet.key_id("stolen")
    register_device_key(fleet.writer, "stolen", new_public, enrolment_key=fleet.enrolment, replace=True)
    fleet.device_keys["stolen"] = new_key
    fleet.upload("stolen", LATER, b"a frame after re-enrolment")
    result = fleet.cli("import", fleet.labels_file([("stolen", LATER)]))
    assert result.exit_code == 0, result.output
    assert "stolen: 4 labelled frame(s); 1.0.0: 1/1 right" in result.output  # the import's summary counts as the report
    assert "(3 not counted: signed by a revoked key" in result.output
    record = SpotLabels.model_validate_json((fleet.root / labels_key("stolen")).read_text())
    assert [(sample.frame_id, sample.key_id) for sample in record.samples] == [
        *((frame, old_key) for frame in FRAMES), (LATER, key_id(new_public))]
    assert _shown(fleet) == {"stolen": 1, "good": 3}


def test_a_forged_revocation_does_not_drop_anyones_labels(tmp_path: Path) -> None:
    """A revocation counts only when an enrolment key signed it (as for the monitor's key reader)."""
    fleet = _imported(tmp_path)
    revoke_device(fleet.writer, "good", enrolment_key=generate_keypair()[0], reason="forged")
    assert _shown(fleet) == {"stolen": 3, "good": 3}
