"""Schema 3 channel pointers: a staged rollout, signed, as each device reads it (in the share or not), and the
one downgrade it may sign: sending the devices it moved back to the version it replaces."""

from __future__ import annotations

import shutil
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from edgefleet.device.floor import VersionFloor
from edgefleet.device.pull import pull_channel_once
from edgefleet.device.staged import target_pointer
from edgefleet.device.store import ModelStore
from edgefleet.device.trust.pointers import ChannelRecord, accepted, judge_pointer, verify_pointer
from edgefleet.device.window import MaintenanceWindow
from edgefleet.flows.registry import LocalRegistryWriter
from edgefleet.flows.registry.staged import stage_rollout
from edgefleet.flows.trust.pointer_signing import DEFAULT_VALIDITY, sign_pointer
from edgefleet.kernel.contracts.manifest import ChannelPointer
from edgefleet.kernel.contracts.rollout import RolloutStage, cohort_bucket
from edgefleet.kernel.errors import ConflictError

from .store_fixtures import Keys, VersionFactory, publish_versions

NEW_SHA, OLD_SHA = "ab" * 32, "cd" * 32
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
ROLLOUT = "birds-1.1.0"


def device_with_bucket(low: int, high: int, rollout: str = ROLLOUT) -> str:
    """A device id whose bucket in `rollout` is in [low, high)."""
    return next(f"cam-{n}" for n in range(100_000) if low <= cohort_bucket(rollout, f"cam-{n}") < high)


INSIDE = device_with_bucket(0, 1_000)  # in at 10 %
OUTSIDE = device_with_bucket(5_000, 10_000)  # out below 50 %


def staged(keys: Keys, share_bp: int, *, previous: ChannelPointer | None = None, now: datetime = NOW,
           version: str = "1.1.0") -> ChannelPointer:
    return sign_pointer(keys.private, model="birds", channel="stable", version=version, manifest_sha256=NEW_SHA,
                        previous=previous, now=now, rollout=RolloutStage(
                            id=ROLLOUT, replaces="1.0.0", replaces_manifest_sha256=OLD_SHA, share_bp=share_bp))


def test_schema_3_pointer_round_trips_and_verifies(keys: Keys) -> None:
    pointer = staged(keys, 1_000)
    again = ChannelPointer.model_validate_json(pointer.to_json_bytes())
    assert again == pointer and again.schema_ == "edgefleet.channel/3" and again.signed
    verify_pointer(keys.public, again, source="test")
    tampered = again.model_copy(update={"rollout": again.rollout.model_copy(update={"share_bp": 10_000})})
    with pytest.raises(Exception, match="signature"):
        verify_pointer(keys.public, tampered, source="test")


def test_a_plain_pointer_stays_schema_2_with_the_bytes_it_always_had(keys: Keys) -> None:
    plain = sign_pointer(keys.private, model="birds", channel="stable", version="1.0.0", manifest_sha256=OLD_SHA,
                         previous=None, now=NOW)
    assert plain.schema_ == "edgefleet.channel/2"
    assert plain.signed_bytes().startswith(b"edgefleet.channel/2\n") and b"rollout" not in plain.signed_bytes()
    assert b"rollout" not in plain.to_json_bytes()


@pytest.mark.parametrize(("change", "message"), [
    ({"schema": "edgefleet.channel/2"}, "needs schema edgefleet.channel/3"),
    ({"downgrade": True}, "never a downgrade"),
    ({"version": "1.0.0"}, "moves to a higher version"),
])
def test_a_rollout_block_out_of_the_contract_is_invalid(keys: Keys, change: dict, message: str) -> None:
    fields = staged(keys, 1_000).model_dump(by_alias=True) | change
    with pytest.raises(ValidationError, match=message):
        ChannelPointer.model_validate(fields)


def test_share_must_be_basis_points() -> None:
    with pytest.raises(ValidationError, match="less than or equal to 10000"):
        RolloutStage(id=ROLLOUT, replaces="1.0.0", replaces_manifest_sha256=OLD_SHA, share_bp=10_001)


def test_each_device_follows_its_side_of_the_share(keys: Keys) -> None:
    pointer = staged(keys, 1_000)
    assert target_pointer(pointer, INSIDE, "1.0.0").pointer.version == "1.1.0"
    outside = target_pointer(pointer, OUTSIDE, "1.0.0").pointer
    assert (outside.version, outside.manifest_sha256, outside.downgrade) == ("1.0.0", OLD_SHA, False)
    judged = judge_pointer(pointer, ChannelRecord(), floor=None, now=NOW, device_id=None)
    assert judged.verdict == "refuse" and "device's id" in judged.reason


def test_the_halt_sends_back_the_devices_it_moved(keys: Keys) -> None:
    moved = staged(keys, 1_000)
    record = accepted(ChannelRecord(), moved, target_pointer(moved, INSIDE, None).pointer)
    floor = VersionFloor("1.1.0", NOW + timedelta(minutes=1))
    halt = staged(keys, 0, previous=moved, now=NOW + timedelta(minutes=5))
    judged = judge_pointer(halt, record, floor=floor, now=NOW + timedelta(minutes=5), device_id=INSIDE)
    assert judged.verdict == "accept", judged.reason
    assert (judged.target.version, judged.target.downgrade) == ("1.0.0", True)
    assert accepted(record, halt, judged.target).highest_version == "1.0.0"
    # the same signed pointer read again (counter unchanged, the floor now lowered) is the same content
    lowered = accepted(record, halt, judged.target)
    again = judge_pointer(halt, lowered, floor=VersionFloor("1.0.0", NOW), now=NOW + timedelta(minutes=6),
                          device_id=INSIDE, running=f"1.0.0 {OLD_SHA}")
    assert again.verdict == "accept", again.reason


def test_a_rollout_never_sends_back_a_device_above_its_version(keys: Keys) -> None:
    halt = staged(keys, 0, now=NOW + timedelta(minutes=5))
    judged = judge_pointer(halt, ChannelRecord(), floor=VersionFloor("2.0.0", NOW), now=NOW + timedelta(minutes=5),
                           device_id=INSIDE)
    assert judged.verdict == "refuse" and "only the devices it moved" in judged.reason


def test_a_send_back_signed_before_the_device_moved_is_a_replay(keys: Keys) -> None:
    old_halt = staged(keys, 0, now=NOW)
    judged = judge_pointer(old_halt, ChannelRecord(), floor=VersionFloor("1.1.0", NOW + timedelta(hours=1)),
                           now=NOW + timedelta(hours=2), device_id=INSIDE)
    assert judged.verdict == "refuse" and "replayed old downgrade" in judged.reason


def test_same_counter_with_another_share_is_refused(keys: Keys) -> None:
    pointer = staged(keys, 1_000)
    record = accepted(ChannelRecord(), pointer, target_pointer(pointer, OUTSIDE, None).pointer)
    wider = staged(keys, 10_000).model_copy(update={"counter": pointer.counter})
    assert judge_pointer(wider, record, floor=None, now=NOW, device_id=OUTSIDE).verdict == "refuse"


def _stable_before_a_rollout(registry: LocalRegistryWriter, make_version: VersionFactory, keys: Keys) -> None:
    """1.0.0 and 1.1.0 published, stable on 1.0.0: where a staged rollout of 1.1.0 starts."""
    publish_versions(registry, make_version, "1.0.0", "1.1.0")
    registry.promote("birds", "1.0.0", "stable", signing_key=keys.private)


def test_pull_mode_stages_widens_and_halts(
    local_registry: LocalRegistryWriter, make_version: VersionFactory, keys: Keys, tmp_path: Path, store: ModelStore
) -> None:
    other = ModelStore(tmp_path / "other-root")
    shutil.copytree(store.root / "keys", other.root / "keys")
    _stable_before_a_rollout(local_registry, make_version, keys)
    devices = {INSIDE: store, OUTSIDE: other}

    def pull_all() -> dict[str, str]:
        for device_id, device_store in devices.items():
            result = pull_channel_once(local_registry, device_store, "birds", "stable", device_id=device_id)
            assert result.outcome in ("activated", "unchanged"), result.reason
        return {device_id: device_store.current("birds").version for device_id, device_store in devices.items()}

    assert pull_all() == {INSIDE: "1.0.0", OUTSIDE: "1.0.0"}
    stage_rollout(local_registry, keys.private, model="birds", channel="stable", rollout_id=ROLLOUT,
                  version="1.1.0", share_bp=1_000, validity=DEFAULT_VALIDITY)
    assert pull_all() == {INSIDE: "1.1.0", OUTSIDE: "1.0.0"}
    with pytest.raises(ConflictError, match="one staged rollout per channel"):
        stage_rollout(local_registry, keys.private, model="birds", channel="stable", rollout_id="other",
                      version="1.1.0", share_bp=1_000, validity=DEFAULT_VALIDITY)
    halt = stage_rollout(local_registry, keys.private, model="birds", channel="stable", rollout_id=ROLLOUT,
                         version="1.1.0", share_bp=0, validity=DEFAULT_VALIDITY)
    assert (halt.rollout.replaces, halt.rollout.share_bp) == ("1.0.0", 0)
    assert pull_all() == {INSIDE: "1.0.0", OUTSIDE: "1.0.0"}
    assert store.floor("birds").version == "1.0.0"  # the signed send-back lowered the floor
    # after a halt, the next rollout replaces what the fleet runs
    publish_versions(local_registry, make_version, "1.2.0")
    fixed = stage_rollout(local_registry, keys.private, model="birds", channel="stable", rollout_id="birds-1.2.0",
                          version="1.2.0", share_bp=10_000, validity=DEFAULT_VALIDITY)
    assert fixed.rollout.replaces == "1.0.0"
    assert pull_all() == {INSIDE: "1.2.0", OUTSIDE: "1.2.0"}


def test_pull_waits_for_the_maintenance_window(
    local_registry: LocalRegistryWriter, make_version: VersionFactory, keys: Keys, store: ModelStore
) -> None:
    publish_versions(local_registry, make_version, "1.0.0")
    local_registry.promote("birds", "1.0.0", "stable", signing_key=keys.private)
    window = MaintenanceWindow(cron="0 2 * * *", timezone="Europe/Berlin", duration_minutes=60)
    now = datetime.now(timezone.utc)
    # the last 02:00 Berlin time (CET or CEST); the window is the hour after it
    local = now.astimezone(ZoneInfo("Europe/Berlin"))
    opens = local.replace(hour=2, minute=0, second=0, microsecond=0).astimezone(timezone.utc)
    if opens > now:
        opens -= timedelta(days=1)
    outside = opens + timedelta(hours=3)
    result = pull_channel_once(local_registry, store, "birds", "stable", window=window, now=outside)
    assert (result.outcome, result.changed) == ("deferred", False) and "maintenance window" in result.reason
    assert store.current("birds") is None and store.installed("birds", "1.0.0") is None
    inside = pull_channel_once(local_registry, store, "birds", "stable", window=window,
                               now=opens + timedelta(minutes=30))
    assert inside.outcome == "activated", inside.reason


def test_promoting_the_version_of_a_partial_rollout_moves_everybody(
    local_registry: LocalRegistryWriter, make_version: VersionFactory, keys: Keys
) -> None:
    _stable_before_a_rollout(local_registry, make_version, keys)
    staged_pointer = stage_rollout(local_registry, keys.private, model="birds", channel="stable",
                                   rollout_id=ROLLOUT, version="1.1.0", share_bp=1_000, validity=DEFAULT_VALIDITY)
    promoted = local_registry.promote("birds", "1.1.0", "stable", signing_key=keys.private)
    assert promoted.rollout is None and promoted.counter > staged_pointer.counter  # written, not "already done"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="`edgefleet registry ls` is the operator CLI (edgefleet.cli), "
                    "which runs on the pipeline side and needs Python 3.11")
def test_registry_ls_shows_each_side_of_a_staged_rollout(
    local_registry: LocalRegistryWriter, make_version: VersionFactory, keys: Keys
) -> None:
    import json

    from typer.testing import CliRunner

    from edgefleet.cli import app

    _stable_before_a_rollout(local_registry, make_version, keys)
    stage_rollout(local_registry, keys.private, model="birds", channel="stable", rollout_id=ROLLOUT,
                  version="1.1.0", share_bp=1_250, validity=DEFAULT_VALIDITY)
    listed = CliRunner().invoke(app, ["registry", "ls", "birds", "--json", "--registry", str(local_registry.root)])
    assert listed.exit_code == 0, listed.output
    rows = {row["version"]: row["channels"] for row in json.loads(listed.stdout)}
    assert rows == {"1.0.0": ["stable (87.5%)"], "1.1.0": ["stable (12.5%)"]}
