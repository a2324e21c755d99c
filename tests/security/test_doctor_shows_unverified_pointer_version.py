"""Issue 20 item 9: `doctor` printed an unverified pointer's version. `edgefleet-agent doctor` read the
channel pointer and reported "stable: 6.6.6" as fact, whoever wrote it: a registry writer could make an
operator believe a device follows a version no release key ever signed. Doctor now judges the pointer
as the agent would (signature, the agent's floor, expiry) and shows a version only once it verified, or
labelled as unverified."""

from __future__ import annotations

from pathlib import Path

from edgefleet.device.agent.config import load_config
from edgefleet.device.doctor import DoctorLimits, check_registry
from edgefleet.device.store import ModelStore
from edgefleet.flows.registry import LocalRegistryWriter
from edgefleet.flows.trust.pointer_signing import sign_pointer
from edgefleet.kernel.contracts.manifest import ChannelPointer
from tests.device.store_fixtures import Keys, VersionFactory, publish_versions
from tests.device.test_pull import overwrite_object
from tests.security.test_downgrade_by_replay import KEY


def doctor_registry(store: ModelStore, registry: LocalRegistryWriter, extra: str = ""):
    path = store.root / "agent.yaml"
    path.write_text(f"device_id: cam-1\nmodel: birds\nroot: {store.root}\nregistry:\n  uri: {registry.root}\n"
                    f"{extra}")
    return check_registry(load_config(path), DoctorLimits())


def forge(registry: LocalRegistryWriter, make_version: VersionFactory, other_keys: Keys) -> None:
    publish_versions(registry, make_version, "6.6.6")
    sha = registry.read_manifest("birds", "6.6.6").manifest_sha256
    forged = sign_pointer(other_keys.private, model="birds", channel="stable", version="6.6.6",
                          manifest_sha256=sha, previous=registry.read_channel("birds", "stable").pointer)
    overwrite_object(registry, KEY, forged.to_json_bytes())


def test_a_forged_pointer_is_reported_without_its_version(
    local_registry: LocalRegistryWriter, store: ModelStore, make_version: VersionFactory, keys: Keys,
    other_keys: Keys,
) -> None:
    publish_versions(local_registry, make_version, "1.0.0")
    local_registry.promote("birds", "1.0.0", "stable", signing_key=keys.private)
    genuine = doctor_registry(store, local_registry)
    assert genuine.status == "ok" and "1.0.0" in genuine.detail and "verified" in genuine.detail

    forge(local_registry, make_version, other_keys)
    check = doctor_registry(store, local_registry)

    assert check.status == "warn" and check.fix
    assert "6.6.6" not in check.detail and "not signed by" in check.detail


def test_an_unsigned_pointer_is_shown_only_as_unverified(
    local_registry: LocalRegistryWriter, store: ModelStore, make_version: VersionFactory
) -> None:
    publish_versions(local_registry, make_version, "6.6.6")
    sha = local_registry.read_manifest("birds", "6.6.6").manifest_sha256
    pointer = ChannelPointer(model="birds", channel="stable", version="6.6.6", manifest_sha256=sha)
    (local_registry.root / KEY).parent.mkdir(parents=True)
    overwrite_object(local_registry, KEY, pointer.to_json_bytes())

    strict = doctor_registry(store, local_registry)
    transition = doctor_registry(store, local_registry, "  require_signed_pointers: false\n")

    assert strict.status == "warn" and "6.6.6" not in strict.detail and "unsigned" in strict.detail
    assert transition.status == "warn" and "6.6.6 (unsigned, unverified)" in transition.detail


def test_a_pointer_the_agent_would_refuse_says_so(
    local_registry: LocalRegistryWriter, store: ModelStore, make_version: VersionFactory, keys: Keys,
    tmp_path: Path,
) -> None:
    """A validly signed pointer below what the device runs (no downgrade flag): doctor says the agent
    refuses it, instead of showing it as the channel's version."""
    publish_versions(local_registry, make_version, "1.0.0")
    local_registry.promote("birds", "1.0.0", "stable", signing_key=keys.private)
    old = local_registry._read_bytes(KEY)
    store.install(make_version("birds", "1.1.0"))
    store.activate("birds", "1.1.0")
    assert old is not None
    overwrite_object(local_registry, KEY, old)

    check = doctor_registry(store, local_registry)

    assert check.status == "warn" and "refuses" in check.detail and "lower than 1.1.0" in check.detail
