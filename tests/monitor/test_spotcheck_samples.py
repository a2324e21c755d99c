"""The operator takes a sample only from its folder's device, signed by the key the fleet trusts for it, with the
JPEG its record hashes (the pure decisions; the commands end to end: tests/security/test_spot_sample_forged_*)."""

from __future__ import annotations

from edgefleet.device.trust.device_identity import sign_spot_sample
from edgefleet.kernel.trust.signatures import generate_keypair
from edgefleet.monitor.device_key_reader import FleetKeys, RefusedRecord
from edgefleet.monitor.spotcheck_samples import image_problem, record_problem, sampler_problem, unpicked_problem
from tests.spot_samples import sampled_frames, spot_sample, unsampled_frame

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


def test_every_frame_the_agents_sampler_takes_passes_the_operators_recomputation() -> None:
    """The device numbers frames `<run>-<sequence>` (`SpotChecker`: the run is its start to the second) and hashes
    (device, run, sequence): the operator recomputes the same choice from the frame id alone."""
    from datetime import UTC, datetime

    from edgefleet.device.spotcheck.sampler import RateCap, SpotSampler
    from edgefleet.kernel.contracts.spotcheck import frame_id

    started = datetime(2026, 12, 7, 21, 0, 5, tzinfo=UTC)
    run = frame_id(started, 0).split("-")[0]
    sampler = SpotSampler("cam-1", run, 0.01, RateCap(per_hour=10**6, per_day=10**6))
    taken = [seq for seq in (sampler.take(0.0) for _ in range(5_000)) if seq is not None]
    assert taken
    for sequence in taken:
        sample = spot_sample("cam-1", frame_id(started, sequence), b"jpeg").model_copy(update={"share": 0.01})
        assert sampler_problem(sample, 0.01) is None
    skipped = next(s for s in range(5_000) if s not in taken)
    assert unpicked_problem("cam-1", frame_id(started, skipped), 0.01) is not None


def test_the_stated_share_is_at_most_the_expected_and_a_lower_one_picks_a_subset() -> None:
    frame = sampled_frames("cam-1", 0.01, 1)[0]
    sample = spot_sample("cam-1", frame, b"jpeg").model_copy(update={"share": 0.01})
    assert sampler_problem(sample, 0.01) is None and sampler_problem(sample, 0.5) is None
    assert (sampler_problem(sample, 0.001) or "").startswith("it states share 0.01, above the share 0.001")
    lower = sampled_frames("cam-1", 0.001, 1)[0]
    assert unpicked_problem("cam-1", lower, 0.01) is None  # picked at 0.001: picked at any higher share too


def test_a_frame_the_sampler_does_not_pick_names_the_device_the_frame_and_the_share() -> None:
    frame = unsampled_frame("cam-1", 0.01)
    assert unpicked_problem("cam-1", frame, 0.01) == (
        f"frame {frame} is not picked by the sampler of device cam-1 at share 0.01 (the hash of device, run and "
        "sequence is above it): the device chose this frame, and a chosen sample biases the labelled accuracy")
