"""Issue 25: the spot check's labelled accuracy is unbiased only if the frames sent are the ones the sampler
picked (a hash of the device id, the run and the frame's sequence under the share), blind to the model's answer.
A compromised device holds its own key, so its signature proves nothing about the choice: it can send only the
frames its model got right (the labelled accuracy biased up), state a share of 1 so that any frame looks picked,
or flood the labellers with samples so that the other devices' frames drown. `pending` and `import` recompute
the sampler's choice from the signed record (device id, frame id = run and sequence, share): a frame the sampler
would not have picked at the share it states, or a share above the one the operator expects (`--share`), is
refused, named, never offered or imported; and one listing offers (one import takes) at most `--max-per-device`
samples of a device, the rest listed as REFUSED with the reason (offered by a later listing)."""

from __future__ import annotations

from pathlib import Path

from edgefleet.kernel.contracts.spotcheck import SpotLabels, labels_key
from tests.spot_samples import EnrolledFleet, offered, sampled_frames, spot_sample, unsampled_frame

SHARE = 0.01
"""What the fleet's agent configs set (`spot_check.share`), and what the operator passes as `--share`."""


def _signed(fleet: EnrolledFleet, device: str, frame: str, share: float = SHARE) -> None:
    image = f"{device} {frame}".encode()
    sample = spot_sample(device, frame, image).model_copy(update={"share": share})
    fleet.plant(device, frame, fleet.signed(device, sample), image)


def test_a_frame_the_sampler_would_not_have_picked_is_never_offered_nor_imported(tmp_path: Path) -> None:
    fleet = EnrolledFleet(tmp_path, ("cam-1",), share=None)
    picked, chosen = sampled_frames("cam-1", SHARE, 1)[0], unsampled_frame("cam-1", SHARE)
    _signed(fleet, "cam-1", picked)
    _signed(fleet, "cam-1", chosen)  # signed by the device's own key: a frame the device chose, not the sampler

    result = fleet.cli("pending", "--share", str(SHARE))
    assert result.exit_code == 0, result.output
    assert offered(result) == [("cam-1", picked)]
    assert f"REFUSED {fleet.root}/spotcheck/cam-1/{chosen}.json" in result.output
    assert "not picked by the sampler" in result.output
    imported = fleet.cli("import", fleet.labels_file([("cam-1", picked), ("cam-1", chosen)]), "--share", str(SHARE))
    assert imported.exit_code == 1 and "not picked by the sampler" in imported.output
    record = SpotLabels.model_validate_json((fleet.root / labels_key("cam-1")).read_text())
    assert [sample.frame_id for sample in record.samples] == [picked]


def test_a_share_above_the_expected_one_is_refused_though_the_frame_is_picked_at_it(tmp_path: Path) -> None:
    """A device stating share 1 makes every frame look picked: it chose them all. Refused whether or not the frame
    is also in the expected sample, and by default too (the default expected share is the agent's default
    `spot_check.share`, below SHARE)."""
    fleet = EnrolledFleet(tmp_path, ("cam-1",), share=None)
    chosen, also_picked = unsampled_frame("cam-1", SHARE), sampled_frames("cam-1", SHARE, 1)[0]
    _signed(fleet, "cam-1", chosen, share=1.0)
    _signed(fleet, "cam-1", also_picked, share=1.0)

    result = fleet.cli("pending", "--share", str(SHARE))
    assert result.exit_code == 0, result.output
    assert offered(result) == []
    assert f"{chosen}.json: frame {chosen} is not picked by the sampler of device cam-1 at share 0.01" in result.output
    assert f"{also_picked}.json: it states share 1, above the share 0.01" in result.output
    assert "pass --share 1" in result.output
    default = fleet.cli("pending")
    assert default.exit_code == 0 and offered(default) == [] and default.output.count("REFUSED") == 2
    imported = fleet.cli("import", fleet.labels_file([("cam-1", chosen), ("cam-1", also_picked)]),
                         "--share", str(SHARE))
    assert imported.exit_code == 1 and "above the share" in imported.output
    assert not (fleet.root / labels_key("cam-1")).exists()


def test_a_lower_share_than_expected_is_taken_its_frames_are_a_subset_of_the_expected_sample(tmp_path: Path) -> None:
    fleet = EnrolledFleet(tmp_path, ("cam-1",), share=None)
    frame = sampled_frames("cam-1", SHARE / 10, 1)[0]
    _signed(fleet, "cam-1", frame, share=SHARE / 10)
    assert offered(fleet.cli("pending", "--share", str(SHARE))) == [("cam-1", frame)]


def test_a_flooding_device_gets_its_cap_per_listing_and_the_others_all_their_frames(tmp_path: Path) -> None:
    fleet = EnrolledFleet(tmp_path, ("flood", "quiet"), share=None)
    flood, quiet = sampled_frames("flood", SHARE, 5), sampled_frames("quiet", SHARE, 2)
    for frame in flood:
        _signed(fleet, "flood", frame)
    for frame in quiet:
        _signed(fleet, "quiet", frame)

    result = fleet.cli("pending", "--share", str(SHARE), "--max-per-device", "2")
    assert result.exit_code == 0, result.output
    assert offered(result) == [("flood", flood[0]), ("flood", flood[1]), ("quiet", quiet[0]), ("quiet", quiet[1])]
    for frame in flood[2:]:
        assert f"REFUSED {fleet.root}/spotcheck/flood/{frame}.json: over --max-per-device 2" in result.output
    imported = fleet.cli("import", fleet.labels_file([("flood", f) for f in flood] + [("quiet", quiet[0])]),
                         "--share", str(SHARE), "--max-per-device", "2")
    assert imported.exit_code == 1 and "over --max-per-device 2" in imported.output
    record = SpotLabels.model_validate_json((fleet.root / labels_key("flood")).read_text())
    assert [sample.frame_id for sample in record.samples] == flood[:2]
    left = fleet.cli("pending", "--share", str(SHARE), "--max-per-device", "2", "--device", "flood")
    assert offered(left) == [("flood", flood[2]), ("flood", flood[3])]  # the next listing offers the next ones


def test_the_default_cap_per_device_is_named_and_bounds_a_listing() -> None:
    from edgefleet.device.spotcheck.config import SpotCheckConfig
    from edgefleet.monitor.spotcheck_samples import DEFAULT_MAX_PER_DEVICE

    assert DEFAULT_MAX_PER_DEVICE == SpotCheckConfig().max_per_day  # one device-day at the agent's default cap


def test_a_share_of_zero_is_named_not_a_traceback(tmp_path: Path) -> None:
    fleet = EnrolledFleet(tmp_path, ("cam-1",), share=None)
    result = fleet.cli("pending", "--share", "0")
    assert result.exit_code == 2 and "--share" in result.output and "no share" in result.output
