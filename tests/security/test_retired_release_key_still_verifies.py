"""Issue 22 item 2, the paths beside the rotation: a retired release key must verify nothing any more, and
retiring it must not strand what is in use.

- retiring the old key while a channel pointer or the manifest it names is signed by it alone is refused;
- after `keys resign` (pointers signed again by the new key, the new key's signature added to the manifests in
  use, the manifests' bytes unchanged) a pulling device takes the new signatures for the version it runs, so
  it still verifies that version once the old key is gone;
- once retired, a pointer signed by the old key (a thief's, or a replay of an old one) is refused by the device
  and by the pipelines, and nothing is recorded as a refusal of a release.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from edgefleet.device.pull import pull_channel_once
from edgefleet.device.store import ModelStore
from edgefleet.flows.registry import LocalRegistryWriter
from edgefleet.flows.trust.key_rotation import (
    add_key,
    resign_in_use,
    retire_key_file,
    retirement_blockers,
)
from edgefleet.flows.trust.pointer_readback import FORGED
from edgefleet.flows.trust.pointer_signing import sign_pointer
from edgefleet.kernel.contracts.layout import channel_key
from edgefleet.kernel.contracts.manifest import SigningInfo
from edgefleet.kernel.errors import ConfigError, VerificationError
from edgefleet.kernel.trust.release_keyring import load_keyring
from edgefleet.kernel.trust.signatures import key_id
from tests.device.store_fixtures import Keys, VersionFactory


def publish_named(registry: LocalRegistryWriter, make_version: VersionFactory, keys: Keys, version: str) -> None:
    """Publishes a version whose manifest names its signing key, as the release flow writes it."""
    from edgefleet.device.trust.version_bundle import read_signed_manifest
    from edgefleet.flows.release.bundle import write_signed_version

    directory = make_version("birds", version, private_key=keys.private)
    manifest = read_signed_manifest(directory).manifest
    write_signed_version(directory, manifest.model_copy(update={"signing": SigningInfo(key_id=key_id(keys.public))}),
                         keys.private)
    registry.publish_version("birds", version, directory)


@pytest.fixture
def rotation(tmp_path: Path, local_registry: LocalRegistryWriter, make_version: VersionFactory, keys: Keys):
    """A fleet on the old key running 1.0.0 from `stable`, the new key added to the keyring (step 1)."""
    publish_named(local_registry, make_version, keys, "1.0.0")
    local_registry.promote("birds", "1.0.0", "stable", signing_key=keys.private)
    ring = tmp_path / "ring"
    add_key(ring, keys.public_file)
    new = Keys(tmp_path / "new-keys")
    add_key(ring, new.public_file)
    store = ModelStore(tmp_path / "device", public_key=ring)
    assert pull_channel_once(local_registry, store, "birds", "stable").outcome == "activated"
    return local_registry, store, ring, new


def test_retiring_the_key_that_signs_what_is_in_use_is_refused(rotation, keys):
    registry, _, ring, _ = rotation
    blockers = retirement_blockers(registry, load_keyring(ring), key_id(keys.public))
    assert blockers and "birds/stable" in blockers[0]
    with pytest.raises(ConfigError, match="only key"):  # nor the last key of a keyring, ever
        retire_key_file(_single_ring(ring, keys), key_id(keys.public))


def _single_ring(ring: Path, keys: Keys) -> Path:
    single = ring.parent / "single"
    add_key(single, keys.public_file)
    return single


def test_after_resign_and_retire_the_device_still_verifies_what_it_runs(rotation, keys):
    registry, store, ring, new = rotation
    results = resign_in_use(registry, load_keyring(ring), new.private, validity=timedelta(days=7))
    assert [(r.channel, r.outcome) for r in results] == [("stable", "resigned")]
    assert retirement_blockers(registry, load_keyring(ring), key_id(keys.public)) == []
    pulled = pull_channel_once(registry, store, "birds", "stable")  # the re-signed pointer: takes the signatures
    assert pulled.outcome == "unchanged"
    retire_key_file(ring, key_id(keys.public))
    assert store.activate("birds", "1.0.0").version == "1.0.0"  # verifies with the new key alone
    assert pull_channel_once(registry, store, "birds", "stable").outcome == "unchanged"


def test_a_pointer_signed_by_the_retired_key_is_refused(rotation, keys, make_version):
    registry, store, ring, new = rotation
    resign_in_use(registry, load_keyring(ring), new.private)
    pull_channel_once(registry, store, "birds", "stable")
    retire_key_file(ring, key_id(keys.public))
    publish_named(registry, make_version, keys, "6.6.6")  # a thief with the old key: version and pointer
    current = registry.read_channel_checked("birds", "stable", load_keyring(ring)).pointer
    forged = sign_pointer(keys.private, model="birds", channel="stable", version="6.6.6",
                          manifest_sha256=registry.read_manifest("birds", "6.6.6").manifest_sha256, previous=current)
    (registry.root / channel_key("birds", "stable")).write_bytes(forged.to_json_bytes())
    result = pull_channel_once(registry, store, "birds", "stable")
    assert result.outcome == "pointer_refused" and "names key" in result.reason
    assert store.current("birds").version == "1.0.0" and store.refusals("birds") == []
    assert registry.read_channel_checked("birds", "stable", load_keyring(ring)).trust == FORGED  # pipelines too
    with pytest.raises(VerificationError, match="names key"):  # the version itself, pushed: refused as well
        store.install(registry.root / "models" / "birds" / "6.6.6")


def test_a_pushed_device_takes_the_new_signatures_when_the_version_is_installed_again(rotation, keys, tmp_path):
    """Push fleets (no pull): the rollout installs the re-signed version again; same manifest, new signatures."""
    registry, _, ring, new = rotation
    pushed = ModelStore(tmp_path / "pushed-device", public_key=ring)
    published = registry.root / "models" / "birds" / "1.0.0"
    pushed.install(published)
    pushed.activate("birds", "1.0.0")
    resign_in_use(registry, load_keyring(ring), new.private)
    assert pushed.install(published).version == "1.0.0"  # already installed: only its signatures are taken
    retire_key_file(ring, key_id(keys.public))
    assert pushed.activate("birds", "1.0.0").version == "1.0.0"


def test_a_device_without_the_new_key_yet_waits_and_records_nothing(tmp_path, local_registry, make_version, keys):
    """Step 1 has not reached this device: a version signed by the new key (its pointer by the old one) is not
    activated, not recorded as refused, and taken at the first pull after the key is installed."""
    publish_named(local_registry, make_version, keys, "1.0.0")
    local_registry.promote("birds", "1.0.0", "stable", signing_key=keys.private)
    ring = tmp_path / "device-ring"
    add_key(ring, keys.public_file)
    store = ModelStore(tmp_path / "device", public_key=ring)
    assert pull_channel_once(local_registry, store, "birds", "stable").outcome == "activated"
    new = Keys(tmp_path / "new-keys")
    publish_named(local_registry, make_version, new, "2.0.0")
    operator_ring = tmp_path / "operator-ring"
    add_key(operator_ring, keys.public_file)
    add_key(operator_ring, new.public_file)
    local_registry.promote("birds", "2.0.0", "stable", signing_key=keys.private, public_key=load_keyring(operator_ring))
    result = pull_channel_once(local_registry, store, "birds", "stable")
    assert result.outcome == "unknown_key" and "names key" in result.reason
    assert store.current("birds").version == "1.0.0" and store.refusals("birds") == []
    add_key(ring, new.public_file)  # deploy-agent brings the keyring
    assert pull_channel_once(local_registry, store, "birds", "stable").outcome == "activated"
