"""The path beside the forged calibration table (issue 25 review): a manifest the release key really signed, for
another version, copied under this version's name in the registry (its signature still verifies). Its table is
the other version's; the monitor refuses it for this version (the manifest's own model and version must be the
ones it was read for) and says why, and takes this version's table once the registry holds it."""

from __future__ import annotations

import shutil
from pathlib import Path

from edgefleet.flows.registry import LocalRegistryWriter
from edgefleet.kernel.contracts.layout import version_prefix
from edgefleet.monitor.calibrations import source_for
from edgefleet.monitor.config import DriftWatchConfig
from edgefleet.monitor.drift_watch import tick
from edgefleet.monitor.store import open_store
from tests.device.store_fixtures import Keys, VersionFactory
from tests.security.calibrated_registry import (
    HONEST,
    INFLATED,
    MODEL,
    copy_version,
    publish_calibrated,
    run_version,
    stored_tables,
)


def test_a_signed_manifest_of_another_version_gives_this_version_no_table(
        tmp_path: Path, local_registry: LocalRegistryWriter, make_version: VersionFactory, keys: Keys) -> None:
    publish_calibrated(local_registry, make_version, keys.private, "1.0.0", INFLATED)  # a real release's table
    copy_version(local_registry.root, "1.0.0", "1.1.0")  # ...replayed as 1.1.0's
    config = DriftWatchConfig(settle_s=0.0, public_key=keys.public_file)
    with open_store(tmp_path / "fleet.sqlite", latency_window=4, count_bucket_s=60.0) as store:
        now = run_version(store, "cam-1", "1.1.0")
        tick(store, config, now, source_for(config, str(local_registry.root)))
        assert stored_tables(store) == {(MODEL, "1.1.0"): None}
        (state, note), = store.connection.execute("SELECT state, note FROM calibrations").fetchall()
        assert state == "refused" and f"manifest for {MODEL} 1.0.0" in note

        shutil.rmtree(local_registry.root / version_prefix(MODEL, "1.1.0"))
        publish_calibrated(local_registry, make_version, keys.private, "1.1.0", HONEST)
        later = run_version(store, "cam-1", "1.1.0", first_minute=10)
        tick(store, config, later, source_for(config, str(local_registry.root)))
        assert stored_tables(store) == {(MODEL, "1.1.0"): HONEST.correct}
