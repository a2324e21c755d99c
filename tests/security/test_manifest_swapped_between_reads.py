"""The path beside the forged calibration table (issue 25 review): a rollout prepares a version by reading its
manifest from the registry (the reference, task and labels its canary judge uses, the sha256 it records and sends)
and then downloading the version, which reads the manifest again; only the download was verified. A manifest
object replaced between the two reads (a bucket writer's forged one first, the release's own for the download)
had the judge use the forged manifest while the verified files passed. The rollout now refuses a version whose
manifest changed between the reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet.device.trust.version_bundle import SignedManifest
from edgefleet.flows.registry import LocalRegistryWriter
from edgefleet.flows.rollout.tasks import prepare_version
from edgefleet.kernel.contracts.layout import MANIFEST_FILE, version_prefix
from edgefleet.kernel.contracts.manifest import Manifest
from edgefleet.kernel.errors import VerificationError
from tests.device.store_fixtures import Keys, VersionFactory


class ReplacedAfterFirstRead(LocalRegistryWriter):
    """The registry directory whose manifest object of `version` holds `forged` until it is first read, and the
    release's own bytes from then on (the object really changes on disk between the reads)."""

    def __init__(self, root: Path, version: str, forged: bytes) -> None:
        super().__init__(root)
        self.path = root / version_prefix("birds", version) / MANIFEST_FILE
        self.genuine, self.reads = self.path.read_bytes(), 0
        self.path.write_bytes(forged)

    def read_manifest(self, model: str, version: str) -> SignedManifest:
        signed = super().read_manifest(model, version)
        self.reads += 1
        self.path.write_bytes(self.genuine)
        return signed


def test_a_manifest_replaced_between_the_rollouts_reads_is_refused(
        tmp_path: Path, local_registry: LocalRegistryWriter, make_version: VersionFactory, keys: Keys) -> None:
    local_registry.publish_version("birds", "1.1.0", make_version("birds", "1.1.0"))
    path = local_registry.root / version_prefix("birds", "1.1.0") / MANIFEST_FILE
    forged = Manifest.model_validate_json(path.read_bytes()).model_copy(update={"task": "detection"}).to_json_bytes()
    registry = ReplacedAfterFirstRead(local_registry.root, "1.1.0", forged)
    with pytest.raises(VerificationError, match="changed while"):
        prepare_version.fn(registry, "birds", "1.1.0", tmp_path / "work", str(keys.public_file))
    assert registry.reads == 2  # the manifest read, then the download's read

    prepared = prepare_version.fn(registry, "birds", "1.1.0", tmp_path / "work", str(keys.public_file))
    assert prepared.manifest.task == "classification"  # the registry holds the release's own manifest again
