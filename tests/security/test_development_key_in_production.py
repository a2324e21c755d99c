"""Finding 6: a development signing key was created with only a log warning and used for `gs://`
registries too. It is now refused for cloud registries unless explicitly allowed, manifests it signs say
so (`signing.development`), and agents can be set to refuse them (`refuse_development_keys`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edgefleet.device.store import ModelStore, StoreOptions
from edgefleet.device.store_reader import PUBLIC_KEY_FILE
from edgefleet.flows.release.bundle import build_manifest
from edgefleet.flows.release.version_tasks import sign_version
from edgefleet.flows.trust.release_key import public_key_path, resolve_signing_key
from edgefleet.flows.trust.signing_params import SigningParams
from edgefleet.kernel.errors import ConfigError, VerificationError
from tests.device.store_fixtures import INPUT_SPEC, OUTPUT_SPEC, model_bytes


def test_the_development_key_is_not_made_or_used_for_a_cloud_registry(tmp_path: Path) -> None:
    params = SigningParams(dev_key_file=str(tmp_path / "dev.key"))
    with pytest.raises(ConfigError, match="cloud registry"):
        resolve_signing_key(params, registry_uri="gs://fleet-models/prod")
    assert not (tmp_path / "dev.key").exists()
    allowed = params.model_copy(update={"allow_development_key": True})
    assert resolve_signing_key(allowed, registry_uri="gs://test-bucket").development


def test_development_signed_versions_are_marked_and_refused_by_a_production_agent(tmp_path: Path) -> None:
    version_dir = tmp_path / "build" / "1.0.0"
    version_dir.mkdir(parents=True)
    (version_dir / "model_cpu.tflite").write_bytes(model_bytes("birds", "1.0.0"))
    (version_dir / "labels.txt").write_text("a\nb\n")
    manifest = build_manifest(version_dir, model="birds", version="1.0.0", input=INPUT_SPEC, outputs=(OUTPUT_SPEC,))
    signing = SigningParams(dev_key_file=str(tmp_path / "keys" / "dev.key"))
    built = sign_version.fn(str(version_dir), manifest, signing, str(tmp_path / "registry"))
    assert built.manifest.signing is not None and built.manifest.signing.development

    root = tmp_path / "agent"
    (root / PUBLIC_KEY_FILE).parent.mkdir(parents=True)
    shutil.copyfile(public_key_path(tmp_path / "keys" / "dev.key"), root / PUBLIC_KEY_FILE)
    production = ModelStore(root, options=StoreOptions(refuse_development_keys=True))
    with pytest.raises(VerificationError, match="DEVELOPMENT key"):
        production.install(version_dir)
    assert production.versions("birds") == []
    assert ModelStore(root).install(version_dir).version == "1.0.0"  # a test device takes it
