"""A device key is revoked two ways: a signed `fleet/revoked/<key id>.json` in the registry, and the monitor
config's `identity.revoked_keys` (a revocation no registry writer can remove: someone holding a registry writer
can delete the first). `edgefleet spotcheck pending` and `import` read the monitor config (`--config`) as the
monitor does: a sample signed by a key either revokes is refused, named, never offered, never imported."""

from __future__ import annotations

from pathlib import Path

from edgefleet.flows.trust.device_key_records import revoke_device
from edgefleet.kernel.contracts.spotcheck import labels_key
from tests.spot_samples import EnrolledFleet, offered, spot_sample

FRAME = "20261207T210000Z-000000000001"


def _fleet(tmp_path: Path) -> EnrolledFleet:
    """Three devices, each with one signed sample: `stolen` revoked in the monitor config only, `lost` in the
    registry only, `good` not at all."""
    fleet = EnrolledFleet(tmp_path, ("stolen", "lost", "good"))
    for device in ("stolen", "lost", "good"):
        image = f"{device}'s frame".encode()
        fleet.plant(device, FRAME, fleet.signed(device, spot_sample(device, FRAME, image)), image)
    revoke_device(fleet.writer, "lost", enrolment_key=fleet.enrolment, reason="lost")
    return fleet


def test_a_sample_signed_by_a_key_revoked_in_the_monitor_config_is_never_offered(tmp_path: Path) -> None:
    fleet = _fleet(tmp_path)
    config = fleet.monitor_config(enrolment_keys=[str(fleet.enrolment_public_key)],
                                  revoked_keys=[fleet.key_id("stolen")])
    result = fleet.cli("pending", "--config", config)
    assert result.exit_code == 0, result.output
    assert offered(result) == [("good", FRAME)]
    assert f"REFUSED {fleet.root}/spotcheck/stolen/{FRAME}.json" in result.output
    assert f"the key {fleet.key_id('stolen')} of device stolen is revoked" in result.output
    assert "spotcheck/lost/" in result.output  # the registry's revocation still holds beside the config's


def test_a_sample_signed_by_a_key_revoked_in_the_monitor_config_is_never_imported(tmp_path: Path) -> None:
    fleet = _fleet(tmp_path)
    config = fleet.monitor_config(enrolment_keys=[str(fleet.enrolment_public_key)],
                                  revoked_keys=[fleet.key_id("stolen")])
    result = fleet.cli("import", fleet.labels_file([("stolen", FRAME), ("good", FRAME)]), "--config", config)
    assert result.exit_code == 1, result.output
    assert "stolen is revoked" in result.output
    assert not (fleet.root / labels_key("stolen")).exists() and (fleet.root / labels_key("good")).exists()


def test_the_monitor_configs_enrolment_keys_are_the_ones_trusted(tmp_path: Path) -> None:
    """With --config the enrolment keys are the config's `identity.enrolment_keys` (as the monitor's), not a
    file the operator's home happens to hold."""
    fleet = _fleet(tmp_path)
    elsewhere = tmp_path / "keys" / "enrolment.pub"
    elsewhere.parent.mkdir()
    fleet.enrolment_public_key.rename(elsewhere)
    result = fleet.cli("pending", "--config", fleet.monitor_config(enrolment_keys=[str(elsewhere)]))
    assert result.exit_code == 0, result.output
    assert offered(result) == [("good", FRAME), ("stolen", FRAME)]


def test_a_monitor_config_without_enrolment_keys_is_named(tmp_path: Path) -> None:
    fleet = _fleet(tmp_path)
    fleet.enrolment_public_key.unlink()
    result = fleet.cli("pending", "--config", fleet.monitor_config(revoked_keys=[fleet.key_id("stolen")]))
    assert result.exit_code != 0 and FRAME not in result.stdout
    assert "identity.enrolment_keys" in result.output
