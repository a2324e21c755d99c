"""Review finding on issue 25: the monitor copied each release's calibration table (manifest schema 3) into the
fleet state from the registry's manifest without checking its signature, and kept the first table it read for a
(model, version) forever. Anyone who can write a manifest object in the registry bucket set every device's
label-free accuracy estimate for that version (`fleet status`, the fleet page, metrics), permanently.

The monitor now takes a table only from a manifest that verifies against the release keyring it is given
(`drift.public_key`, as the devices'), records a refused one with the reason and tries it again later, and
never replaces a verified table by a different one."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet.flows.registry import LocalRegistryWriter
from edgefleet.monitor.config import DriftWatchConfig
from edgefleet.monitor.drift_watch import tick
from edgefleet.monitor.query import fleet_status
from edgefleet.monitor.store import FleetStore, from_epoch, open_store
from tests.device.store_fixtures import Keys, VersionFactory
from tests.security.calibrated_registry import (
    HONEST,
    INFLATED,
    MODEL,
    publish_calibrated,
    rewrite_manifest,
    run_version,
    stored_tables,
)


@pytest.fixture
def fleet_state(tmp_path: Path) -> FleetStore:
    with open_store(tmp_path / "fleet.sqlite", latency_window=4, count_bucket_s=60.0) as opened:
        yield opened


def watch(public_key: Path | None, **fields: object) -> DriftWatchConfig:
    return DriftWatchConfig(settle_s=0.0, max_buckets_per_tick=10_000, public_key=public_key, **fields)


def monitor_tick(store: FleetStore, registry: LocalRegistryWriter, config: DriftWatchConfig, now: float) -> None:
    """One drift tick of the monitor, with the calibration source its config gives it (as `run_monitor`)."""
    from edgefleet.monitor.calibrations import source_for

    tick(store, config, now, source_for(config, str(registry.root)))


def note_of(store: FleetStore, now: float) -> str | None:
    (device,) = fleet_status(store, 10**9, from_epoch(now)).devices
    assert device.drift is not None
    return device.drift.accuracy_note


def test_a_manifest_rewritten_with_an_inflated_table_never_reaches_the_fleet_state(
        fleet_state: FleetStore, local_registry: LocalRegistryWriter, make_version: VersionFactory,
        keys: Keys) -> None:
    publish_calibrated(local_registry, make_version, keys.private, "1.0.0")
    rewrite_manifest(local_registry.root, "1.0.0", INFLATED)  # the release's signature left beside it
    now = run_version(fleet_state, "cam-1", "1.0.0")
    monitor_tick(fleet_state, local_registry, watch(keys.public_file), now)
    assert stored_tables(fleet_state).get((MODEL, "1.0.0")) != INFLATED.correct
    assert "refused" in note_of(fleet_state, now) and "signature check failed" in note_of(fleet_state, now)


def test_a_table_signed_by_a_key_that_is_no_release_key_is_refused(
        fleet_state: FleetStore, local_registry: LocalRegistryWriter, make_version: VersionFactory, keys: Keys,
        other_keys: Keys) -> None:
    publish_calibrated(local_registry, make_version, keys.private, "1.0.0")
    rewrite_manifest(local_registry.root, "1.0.0", INFLATED, sign_with=other_keys.private)
    now = run_version(fleet_state, "cam-1", "1.0.0")
    monitor_tick(fleet_state, local_registry, watch(keys.public_file), now)
    assert stored_tables(fleet_state).get((MODEL, "1.0.0")) != INFLATED.correct
    assert "not signed by a key this keyring holds" in note_of(fleet_state, now)


def test_a_refused_table_is_tried_again_and_the_release_s_own_manifest_then_replaces_it(
        fleet_state: FleetStore, local_registry: LocalRegistryWriter, make_version: VersionFactory,
        keys: Keys) -> None:
    root = local_registry.root / "models" / MODEL / "1.0.0"
    publish_calibrated(local_registry, make_version, keys.private, "1.0.0")
    genuine = (root / "manifest.json").read_bytes()
    rewrite_manifest(local_registry.root, "1.0.0", INFLATED)  # a torn or forged first read
    now = run_version(fleet_state, "cam-1", "1.0.0")
    config = watch(keys.public_file)
    monitor_tick(fleet_state, local_registry, config, now)
    assert stored_tables(fleet_state)[(MODEL, "1.0.0")] is None
    (root / "manifest.json").write_bytes(genuine)  # the registry holds the release's manifest again
    later = run_version(fleet_state, "cam-1", "1.0.0", first_minute=10)
    monitor_tick(fleet_state, local_registry, config, later)
    assert stored_tables(fleet_state)[(MODEL, "1.0.0")] == HONEST.correct
    assert note_of(fleet_state, later) is None


def test_a_verified_table_is_never_replaced_by_a_different_signed_one(
        fleet_state: FleetStore, local_registry: LocalRegistryWriter, make_version: VersionFactory,
        keys: Keys, caplog: pytest.LogCaptureFixture) -> None:
    publish_calibrated(local_registry, make_version, keys.private, "1.0.0")
    config = watch(keys.public_file, calibration_recheck_s=60.0)
    now = run_version(fleet_state, "cam-1", "1.0.0")
    monitor_tick(fleet_state, local_registry, config, now)
    assert stored_tables(fleet_state)[(MODEL, "1.0.0")] == HONEST.correct
    # Re-published under the same version with the release key itself (a release version is immutable).
    rewrite_manifest(local_registry.root, "1.0.0", INFLATED, sign_with=keys.private)
    later = run_version(fleet_state, "cam-1", "1.0.0", first_minute=10)
    monitor_tick(fleet_state, local_registry, config, later)
    assert stored_tables(fleet_state)[(MODEL, "1.0.0")] == HONEST.correct
    note = note_of(fleet_state, later)
    assert note is not None and "different signed manifest" in note and "immutable" in note
    assert any(record.levelname == "ERROR" and "different signed manifest" in record.getMessage()
               for record in caplog.records)
    assert "different signed manifest" in status_text(fleet_state)


def test_without_a_release_key_the_monitor_takes_no_table_and_says_why(
        fleet_state: FleetStore, local_registry: LocalRegistryWriter, make_version: VersionFactory,
        keys: Keys) -> None:
    publish_calibrated(local_registry, make_version, keys.private, "1.0.0")  # even a genuine one
    now = run_version(fleet_state, "cam-1", "1.0.0")
    monitor_tick(fleet_state, local_registry, watch(None), now)
    assert stored_tables(fleet_state).get((MODEL, "1.0.0")) is None
    assert "drift.public_key" in note_of(fleet_state, now)
    shown = status_text(fleet_state)
    assert f"est. accuracy of {MODEL}:1.0.0: calibration table refused: the monitor has no release public key" in shown


def status_text(store: FleetStore) -> str:
    """`edgefleet fleet status` on the fleet state, its lines unwrapped."""
    from typer.testing import CliRunner

    from edgefleet.cli import app

    result = CliRunner().invoke(app, ["fleet", "status", "--db", str(store.location.path)],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())
