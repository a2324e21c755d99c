"""The operator takes a sample only from its folder's device, signed by the key the fleet trusts for it, with the
JPEG its record hashes (the pure decisions; the commands end to end: tests/security/test_spot_sample_forged_*)."""

from __future__ import annotations

from edgefleet.device.trust.device_identity import sign_spot_sample
from edgefleet.kernel.trust.signatures import generate_keypair
from edgefleet.monitor.device_key_reader import FleetKeys, RefusedRecord
from edgefleet.monitor.spotcheck_samples import image_problem, record_problem
from tests.spot_samples import spot_sample

FRAME = "20261207T210000Z-000000000007"
KEY, PUBLIC = generate_keypair()
KEYS = FleetKeys({"cam-1": PUBLIC})


def test_the_devices_own_signed_sample_is_taken() -> None:
    sample = sign_spot_sample(KEY, spot_sample("cam-1", FRAME, b"jpeg"))
    assert record_problem(sample, "cam-1", FRAME, KEYS) is None and image_problem(sample, b"jpeg") is None


def test_a_sample_under_another_folder_or_frame_names_both() -> None:
    sample = sign_spot_sample(KEY, spot_sample("cam-1", FRAME, b"jpeg"))
    assert (record_problem(sample, "cam-2", FRAME, FleetKeys({"cam-2": PUBLIC})) or "").startswith(
        f"its record names cam-1 {FRAME}, not cam-2 {FRAME}")
    other = "20261207T210000Z-000000000008"
    assert f"not cam-1 {other}" in (record_problem(sample, "cam-1", other, KEYS) or "")


def test_a_device_without_a_trusted_key_record_says_why() -> None:
    sample = sign_spot_sample(KEY, spot_sample("cam-1", FRAME, b"jpeg"))
    assert record_problem(sample, "cam-1", FRAME, FleetKeys({})) == (
        "device cam-1 has no key record the operator trusts in fleet/devices/")
    revoked = FleetKeys({}, (RefusedRecord("fleet/devices/cam-1.json", "the key 0a of device cam-1 is revoked", ""),))
    assert "(the key 0a of device cam-1 is revoked)" in (record_problem(sample, "cam-1", FRAME, revoked) or "")


def test_a_missing_or_other_jpeg_is_refused() -> None:
    sample = spot_sample("cam-1", FRAME, b"jpeg")
    assert image_problem(sample, None) == "its JPEG is missing"
    assert image_problem(sample, b"other") == "the JPEG does not match the hash its signed record holds"
