"""The path beside the forged calibration table (issue 25 review): the scheduled promotion judged the canary
version with the reference distributions, task and label count of its manifest as the registry held it, read
WITHOUT checking its signature (the pointer it promotes was verified, the manifest beside it was not). A bucket
writer who rewrites that manifest (a `detection` task, a reference matching the canary devices' answers) steers
the judge that lets a version reach every device. The promotion now judges with the manifest the verified
pointer names, verified against the release key, and stops with an error naming it otherwise."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from edgefleet.flows.registry import LocalRegistryWriter
from edgefleet.flows.rollout.params import PromotionParams
from edgefleet.flows.rollout.promote import promotion_pointers, promotion_subject
from edgefleet.kernel.contracts.layout import MANIFEST_FILE, version_prefix
from edgefleet.kernel.contracts.manifest import Manifest
from edgefleet.kernel.errors import VerificationError
from edgefleet.monitor.config import MonitorConfig
from edgefleet.monitor.ingest import apply
from edgefleet.monitor.store import commit, open_store
from tests.device.store_fixtures import Keys, VersionFactory, publish_versions
from tests.monitor.monitor_helpers import telemetry


def canary_world(tmp_path: Path, registry: LocalRegistryWriter, make_version: VersionFactory,
                 keys: Keys) -> tuple[PromotionParams, datetime]:
    """1.0.0 on stable, 1.1.0 on canary; the canary device ran 1.0.0, then 1.1.0 for an hour (the fleet state)."""
    publish_versions(registry, make_version, "1.0.0", "1.1.0")
    registry.promote("birds", "1.0.0", "stable", signing_key=keys.private)
    registry.promote("birds", "1.1.0", "canary", signing_key=keys.private)
    config = MonitorConfig(store_path=tmp_path / "fleet.sqlite")
    (tmp_path / "monitor.yaml").write_text(yaml.safe_dump({"monitor": config.model_dump(mode="json")}))
    now = datetime.now(UTC)
    with open_store(config.store_path, latency_window=4, count_bucket_s=60.0) as store:
        for seq, (minutes_ago, version) in enumerate([(120, "1.0.0"), (90, "1.0.0"), (60, "1.1.0"), (1, "1.1.0")]):
            apply(store, telemetry("cam-1", seq + 1, at=now - timedelta(minutes=minutes_ago), model="birds",
                                   version=version))
        commit(store)
    params = PromotionParams(inventory=str(tmp_path / "inventory.yaml"), registry=str(registry.root), model="birds",
                             monitor_config=str(tmp_path / "monitor.yaml"), healthy_for_s=1800.0)
    return params, now


def test_a_rewritten_manifest_does_not_steer_the_promotion_judge(
        tmp_path: Path, local_registry: LocalRegistryWriter, make_version: VersionFactory, keys: Keys) -> None:
    params, now = canary_world(tmp_path, local_registry, make_version, keys)
    source, _ = promotion_pointers(local_registry, "birds", "canary", "stable", keys.public)
    subject = promotion_subject(params, local_registry, source, keys.public, ["cam-1"], [], now)
    assert subject is not None and not subject.detector and subject.before == "1.0.0"

    path = local_registry.root / version_prefix("birds", "1.1.0") / MANIFEST_FILE
    manifest = Manifest.model_validate_json(path.read_bytes())
    path.write_bytes(manifest.model_copy(update={"task": "detection", "label_count": 1}).to_json_bytes())
    with pytest.raises(VerificationError, match="birds/canary"):
        promotion_subject(params, local_registry, source, keys.public, ["cam-1"], [], now)
