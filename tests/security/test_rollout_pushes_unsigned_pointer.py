"""Issue 20 items 3 and 9: the `rollout` deployment pushed whatever the channel's pointer named, unverified and
even unsigned, and its `public_key` defaulted to none (no check at all). A bucket writer plants a pointer; the
next rollout of the channel sends that version to every device over SSH. Now the release public key is
required, and a rollout by channel follows only a pointer that verifies and has not expired."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from edgefleet.flows.registry import LocalRegistryWriter
from edgefleet.flows.rollout.flow import resolve_version
from edgefleet.flows.rollout.params import RolloutParams
from edgefleet.flows.trust.pointer_signing import sign_pointer
from edgefleet.kernel.contracts.layout import channel_key
from edgefleet.kernel.contracts.manifest import ChannelPointer
from edgefleet.kernel.errors import VerificationError
from tests.device.store_fixtures import Keys, VersionFactory, publish_versions
from tests.device.test_pull import overwrite_object

KEY = channel_key("birds", "stable")


def params(registry: LocalRegistryWriter, keys: Keys, **overrides: object) -> RolloutParams:
    return RolloutParams.model_validate({"inventory": "fleet.yaml", "registry": str(registry.root), "model": "birds",
                                         "channel": "stable", "public_key": str(keys.public_file), **overrides})


@pytest.fixture
def released(local_registry: LocalRegistryWriter, make_version: VersionFactory, keys: Keys) -> LocalRegistryWriter:
    publish_versions(local_registry, make_version, "0.9.0", "1.0.0")
    local_registry.promote("birds", "1.0.0", "stable", signing_key=keys.private)
    return local_registry


def test_a_rollout_without_the_release_public_key_is_refused_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="public_key.*release public key"):
        RolloutParams.model_validate({"inventory": "fleet.yaml", "registry": str(tmp_path), "model": "birds",
                                      "channel": "stable"})


def test_a_genuine_pointer_is_followed(released: LocalRegistryWriter, keys: Keys) -> None:
    chosen = resolve_version(released, params(released, keys))
    assert (chosen.version, chosen.downgrade) == ("1.0.0", False)


def test_an_unsigned_pointer_is_not_rolled_out(released: LocalRegistryWriter, keys: Keys) -> None:
    sha = released.read_manifest("birds", "0.9.0").manifest_sha256
    planted = ChannelPointer(model="birds", channel="stable", version="0.9.0", manifest_sha256=sha)
    overwrite_object(released, KEY, planted.to_json_bytes())
    with pytest.raises(VerificationError, match="not signed"):
        resolve_version(released, params(released, keys))


def test_a_pointer_signed_by_another_key_is_not_rolled_out(
    released: LocalRegistryWriter, keys: Keys, other_keys: Keys
) -> None:
    sha = released.read_manifest("birds", "0.9.0").manifest_sha256
    forged = sign_pointer(other_keys.private, model="birds", channel="stable", version="0.9.0", manifest_sha256=sha,
                          previous=None, downgrade=True)
    overwrite_object(released, KEY, forged.to_json_bytes())
    with pytest.raises(VerificationError, match="does not verify"):
        resolve_version(released, params(released, keys))


def test_an_expired_pointer_is_not_rolled_out(released: LocalRegistryWriter, keys: Keys) -> None:
    released.promote("birds", "0.9.0", "stable", signing_key=keys.private, downgrade=True,
                     validity=timedelta(seconds=0))
    with pytest.raises(VerificationError, match="expired"):
        resolve_version(released, params(released, keys))


def test_the_rollout_deployment_sets_the_key_and_the_ui_form_requires_it() -> None:
    import yaml

    document = yaml.safe_load((Path(__file__).resolve().parents[2] / "prefect.yaml").read_text())
    (deployment,) = [d for d in document["deployments"] if d["name"] == "rollout"]
    deployed = RolloutParams.model_validate(deployment["parameters"]["params"])
    assert deployed.public_key.endswith("release-signing.key.pub") and "~" not in deployed.public_key
    assert "public_key" in RolloutParams.model_json_schema()["required"]  # the Prefect UI's form asks for it


def test_the_version_sent_is_the_manifest_the_signed_pointer_names(
    released: LocalRegistryWriter, keys: Keys, make_version: VersionFactory, tmp_path: Path
) -> None:
    """A bucket writer swaps in another manifest of the same version, signed too (e.g. a rebuilt 1.0.0 that was
    never promoted): the pointer still verifies, the version too, but it is not what the pointer names."""
    import shutil

    from edgefleet.flows.rollout.tasks import prepare_version

    chosen = resolve_version(released, params(released, keys))
    rebuilt = make_version("birds", "1.0.0", files={"model_cpu.tflite": b"TFL3 another build " * 64})
    version_dir = released.root / "models" / "birds" / "1.0.0"
    for name in ("model_cpu.tflite", "manifest.sig", "manifest.json"):
        shutil.copyfile(rebuilt / name, version_dir / name)
    with pytest.raises(VerificationError, match="signed channel pointer names"):
        prepare_version.fn(released, "birds", chosen.version, tmp_path / "work", str(keys.public_file),
                           chosen.downgrade, chosen.manifest_sha256)
