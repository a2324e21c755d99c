"""The path beside the forged calibration table (issue 25 review): a manifest signed with a DEVELOPMENT key (one
that sits on laptops and in sandboxes, and that a keyring may hold while a fleet is tried out) is a release only
where development keys are accepted. A monitor set to refuse them (`drift.refuse_development_keys`, as the
devices' `refuse_development_keys`) takes no table from it, says why, and takes the table of a production-signed
version beside it."""

from __future__ import annotations

from pathlib import Path

from edgefleet.flows.registry import LocalRegistryWriter
from edgefleet.kernel.trust.release_keyring import key_file_name
from edgefleet.monitor.calibrations import source_for
from edgefleet.monitor.config import DriftWatchConfig
from edgefleet.monitor.drift_watch import tick
from edgefleet.monitor.store import open_store
from tests.device.store_fixtures import Keys, VersionFactory
from tests.security.calibrated_registry import HONEST, INFLATED, MODEL, publish_calibrated, run_version, stored_tables


def test_a_development_signed_table_is_refused_where_development_keys_are(
        tmp_path: Path, local_registry: LocalRegistryWriter, make_version: VersionFactory, keys: Keys) -> None:
    development = Keys(tmp_path / "dev-keys")
    ring = tmp_path / "release.d"  # the production key and the development key, as a trial keyring holds them
    ring.mkdir()
    for pair in (keys, development):
        (ring / key_file_name(pair.public)).write_bytes(pair.public_file.read_bytes())
    publish_calibrated(local_registry, make_version, development.private, "1.0.0", INFLATED, development=True)
    publish_calibrated(local_registry, make_version, keys.private, "1.1.0", HONEST)
    production = DriftWatchConfig(settle_s=0.0, public_key=ring, refuse_development_keys=True)
    trial = production.model_copy(update={"refuse_development_keys": False})
    with open_store(tmp_path / "fleet.sqlite", latency_window=4, count_bucket_s=60.0) as store:
        run_version(store, "cam-1", "1.0.0")
        now = run_version(store, "cam-2", "1.1.0")
        tick(store, production, now, source_for(production, str(local_registry.root)))
        assert stored_tables(store) == {(MODEL, "1.0.0"): None, (MODEL, "1.1.0"): HONEST.correct}
        (note,) = store.connection.execute("SELECT note FROM calibrations WHERE model_version = '1.0.0'").fetchone()
        assert "DEVELOPMENT key" in note and "drift.refuse_development_keys" in note

    with open_store(tmp_path / "trial.sqlite", latency_window=4, count_bucket_s=60.0) as store:
        now = run_version(store, "cam-1", "1.0.0")
        tick(store, trial, now, source_for(trial, str(local_registry.root)))
        assert stored_tables(store) == {(MODEL, "1.0.0"): INFLATED.correct}  # a trial fleet takes it (the default)
