"""Finding 14: downloads were checked for size only after they finished, and the manifest was read without
a size cap: a registry writer could fill a device's disk or memory. Objects larger than the (signed)
manifest says are now refused before they are downloaded, and a manifest has a size cap."""

from __future__ import annotations

import pytest

from edgefleet.device.pull import pull_channel_once
from edgefleet.device.registry.object_keys import MAX_MANIFEST_BYTES
from edgefleet.device.store import ModelStore
from edgefleet.flows.registry import RegistryWriter
from edgefleet.kernel.errors import VerificationError
from tests.device.store_fixtures import Keys, VersionFactory
from tests.device.test_pull import overwrite_object


def test_a_model_object_larger_than_its_manifest_says_is_refused_before_download(
    registry: RegistryWriter, store: ModelStore, make_version: VersionFactory, keys: Keys, tmp_path
) -> None:
    registry.publish_version("birds", "1.0.0", make_version("birds", "1.0.0"))
    registry.promote("birds", "1.0.0", "stable", signing_key=keys.private)
    overwrite_object(registry, "models/birds/1.0.0/model_cpu.tflite", b"\0" * (4 * 1024 * 1024))
    with pytest.raises(VerificationError, match="refused before downloading"):
        registry.download_version("birds", "1.0.0", tmp_path / "dl")
    result = pull_channel_once(registry, store, "birds", "stable")
    assert result.outcome == "refused" and "refused before downloading" in result.reason
    assert store.versions("birds") == []


def test_a_huge_manifest_is_refused_unread(registry: RegistryWriter, make_version: VersionFactory) -> None:
    registry.publish_version("birds", "1.0.0", make_version("birds", "1.0.0"))
    overwrite_object(registry, "models/birds/1.0.0/manifest.json", b" " * (MAX_MANIFEST_BYTES + 1))
    with pytest.raises(VerificationError, match="refused before downloading"):
        registry.read_manifest("birds", "1.0.0")
