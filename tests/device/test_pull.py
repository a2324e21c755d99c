"""Pull mode end to end from a local registry and from the GCS emulator, including tampered objects."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from google.cloud import storage

from edgefleet.device.poller import ChannelPoller
from edgefleet.device.pull import PullResult, pull_channel_once
from edgefleet.device.registry import GcsRegistryReader, LocalRegistryReader
from edgefleet.device.store import ModelStore
from edgefleet.flows.registry import GcsRegistryWriter, LocalRegistryWriter, RegistryWriter
from edgefleet.flows.trust.pointer_signing import sign_pointer
from edgefleet.kernel.contracts.layout import MANIFEST_FILE
from edgefleet.kernel.errors import RegistryError

from .store_fixtures import Keys, VersionFactory
from .test_store import snapshot

EVENT_TIMEOUT_S = 30


def overwrite_object(registry: RegistryWriter, key: str, data: bytes) -> None:
    """Changes an object in the registry behind its back (an attacker, or bit rot)."""
    if isinstance(registry, GcsRegistryReader):
        registry.client.bucket(registry.bucket_name).blob(f"{registry.prefix}/{key}").upload_from_string(data)
    else:
        (registry.root / key).write_bytes(data)


def release(
    registry: RegistryWriter, make_version: VersionFactory, keys: Keys, version: str, channel: str = "stable"
) -> str:
    """Publishes `version` and points `channel` at it with a pointer signed by the release key."""
    registry.publish_version("birds", version, make_version("birds", version))
    return registry.promote("birds", version, channel, signing_key=keys.private).manifest_sha256


def followed(registry: RegistryWriter, store: ModelStore, make_version: VersionFactory, keys: Keys,
             *versions: str) -> None:
    """The device pulled each of `versions` in turn, as each was released on stable."""
    for version in versions:
        release(registry, make_version, keys, version)
        assert pull_channel_once(registry, store, "birds", "stable").version == version


def test_pull_installs_and_activates_what_the_channel_names(
    registry: RegistryWriter, store: ModelStore, make_version: VersionFactory, keys: Keys
) -> None:
    assert pull_channel_once(registry, store, "birds", "stable").outcome == "no_channel"

    sha = release(registry, make_version, keys, "1.0.0")
    first = pull_channel_once(registry, store, "birds", "stable")
    assert (first.changed, first.version, first.outcome, first.previous) == (True, "1.0.0", "activated", None)
    assert store.current("birds").manifest_sha256 == sha

    again = pull_channel_once(registry, store, "birds", "stable")
    assert (again.changed, again.outcome) == (False, "unchanged")

    release(registry, make_version, keys, "1.1.0")
    second = pull_channel_once(registry, store, "birds", "stable")
    assert (second.changed, second.version, second.previous) == (True, "1.1.0", "1.0.0")
    assert (store.current("birds").version, store.previous("birds").version) == ("1.1.0", "1.0.0")


def test_pull_follows_a_channel_moved_back_to_an_installed_version(
    registry: RegistryWriter, store: ModelStore, make_version: VersionFactory, keys: Keys
) -> None:
    followed(registry, store, make_version, keys, "1.0.0", "2.0.0")
    # the operator rolls the channel back: a signed pointer that says it is a deliberate downgrade
    registry.promote("birds", "1.0.0", "stable", signing_key=keys.private, downgrade=True)

    result = pull_channel_once(registry, store, "birds", "stable")
    assert (result.changed, result.version, result.previous) == (True, "1.0.0", "2.0.0")
    assert store.current("birds").version == "1.0.0"


def test_tampered_model_object_in_the_registry_is_refused_and_remembered(
    registry: RegistryWriter, store: ModelStore, make_version: VersionFactory, keys: Keys
) -> None:
    followed(registry, store, make_version, keys, "1.0.0")
    release(registry, make_version, keys, "2.0.0")
    overwrite_object(registry, "models/birds/2.0.0/model_cpu.tflite", b"backdoored model")
    before = snapshot(store.root / "models" / "birds")

    result = pull_channel_once(registry, store, "birds", "stable")
    assert (result.changed, result.outcome, result.version) == (False, "refused", "2.0.0")
    assert "model_cpu.tflite" in result.reason
    assert store.current("birds").version == "1.0.0"
    assert store.versions("birds") == ["1.0.0"]
    after = snapshot(store.root / "models" / "birds")
    assert {name: value for name, value in after.items() if name != ".refused.json"} == before

    # not downloaded again at every poll
    skipped = pull_channel_once(registry, store, "birds", "stable")
    assert (skipped.changed, skipped.outcome) == (False, "previously_refused")
    assert "model_cpu.tflite" in skipped.reason


def test_tampered_manifest_in_the_registry_is_refused(
    registry: RegistryWriter, store: ModelStore, make_version: VersionFactory, keys: Keys
) -> None:
    release(registry, make_version, keys, "1.0.0")
    raw = registry.read_manifest("birds", "1.0.0").raw
    overwrite_object(
        registry,
        f"models/birds/1.0.0/{MANIFEST_FILE}",
        raw.replace(b'"source_commit": "0123abc"', b'"source_commit": "fffffff"'),
    )

    result = pull_channel_once(registry, store, "birds", "stable")
    assert result.outcome == "refused"
    assert "channel stable names" in result.reason  # the manifest is not the one that was promoted
    assert store.current("birds") is None
    assert store.versions("birds") == []


def test_version_signed_with_another_key_is_refused(
    registry: RegistryWriter, store: ModelStore, make_version: VersionFactory, keys: Keys, other_keys: Keys
) -> None:
    registry.publish_version("birds", "1.0.0", make_version("birds", "1.0.0", private_key=other_keys.private))
    # a pointer the release key signed without checking the manifest (promote() would refuse to)
    sha = registry.read_manifest("birds", "1.0.0").manifest_sha256
    pointer = sign_pointer(keys.private, model="birds", channel="stable", version="1.0.0", manifest_sha256=sha,
                           previous=None)
    registry.set_channel("birds", "stable", pointer, 0)

    result = pull_channel_once(registry, store, "birds", "stable")
    assert result.outcome == "refused"
    assert str(store.root / "keys" / "release.pub") in result.reason
    assert store.versions("birds") == []


def test_refused_version_can_be_retried_after_the_registry_is_fixed(
    local_registry: RegistryWriter, store: ModelStore, make_version: VersionFactory, keys: Keys
) -> None:
    source = make_version("birds", "1.0.0")
    local_registry.publish_version("birds", "1.0.0", source)
    local_registry.promote("birds", "1.0.0", "stable", signing_key=keys.private)
    original = (source / "labels.txt").read_bytes()
    overwrite_object(local_registry, "models/birds/1.0.0/labels.txt", b"tampered\n")
    assert pull_channel_once(local_registry, store, "birds", "stable").outcome == "refused"

    overwrite_object(local_registry, "models/birds/1.0.0/labels.txt", original)
    assert pull_channel_once(local_registry, store, "birds", "stable").outcome == "previously_refused"
    fixed = pull_channel_once(local_registry, store, "birds", "stable", retry_refused=True)
    assert fixed.changed


@pytest.mark.slow
def test_pull_a_real_coral_model_from_gcs(
    gcs_registry: GcsRegistryWriter, store: ModelStore, keys: Keys, make_version: VersionFactory, coral_data: Path
) -> None:
    files = {
        "model_cpu.tflite": coral_data / "mobilenet_v1_0.25_128_quant.tflite",
        "model_edgetpu.tflite": coral_data / "mobilenet_v1_0.25_128_quant_edgetpu.tflite",
        "labels.txt": coral_data / "imagenet_labels.txt",
    }
    gcs_registry.publish_version("mobilenet", "1.0.0", make_version("mobilenet", "1.0.0", files=files))
    gcs_registry.promote("mobilenet", "1.0.0", "stable", signing_key=keys.private)

    result = pull_channel_once(gcs_registry, store, "mobilenet", "stable", keys.public_file)
    assert result.changed
    installed = store.current("mobilenet")
    assert (installed.path / "model_cpu.tflite").read_bytes() == files["model_cpu.tflite"].read_bytes()
    assert installed.manifest.label_count == 1001


def test_poller_reports_changes_refusals_and_transient_errors(
    registry: RegistryWriter, store: ModelStore, make_version: VersionFactory, keys: Keys
) -> None:
    changes: list[PullResult] = []
    refusals: list[PullResult] = []
    changed = threading.Event()
    refused = threading.Event()

    def on_change(result: PullResult) -> None:
        changes.append(result)
        changed.set()

    def on_refusal(result: PullResult) -> None:
        refusals.append(result)
        refused.set()

    release(registry, make_version, keys, "1.0.0")
    # a long interval: every poll after the first is triggered explicitly with poll_now()
    with ChannelPoller(
        registry, store, "birds", "stable", interval_s=3600, on_change=on_change, on_refusal=on_refusal
    ) as poller:
        assert changed.wait(EVENT_TIMEOUT_S)
        assert changes[0].version == "1.0.0"

        release(registry, make_version, keys, "2.0.0")
        overwrite_object(registry, "models/birds/2.0.0/labels.txt", b"tampered\n")
        poller.poll_now()
        assert refused.wait(EVENT_TIMEOUT_S)
        assert refusals[0].version == "2.0.0"
        assert store.current("birds").version == "1.0.0"
    status = poller.status()
    assert not poller.running
    assert (status.changes, status.refusals, status.unexpected_errors) == (1, 1, 0)


def test_poller_treats_an_unreachable_registry_as_transient_and_keeps_polling(
    tmp_path: Path, store: ModelStore, make_version: VersionFactory, keys: Keys
) -> None:
    registry = LocalRegistryReader(tmp_path / "not-mounted-yet")
    errors: list[tuple[BaseException, bool]] = []
    failed = threading.Event()
    changed = threading.Event()

    def on_error(error: BaseException, transient: bool) -> None:
        errors.append((error, transient))
        failed.set()

    with ChannelPoller(
        registry,
        store,
        "birds",
        "stable",
        interval_s=3600,
        on_error=on_error,
        on_change=lambda result: changed.set(),
    ) as poller:
        assert failed.wait(EVENT_TIMEOUT_S)
        assert isinstance(errors[0][0], RegistryError) and errors[0][1] is True
        # the registry appears (e.g. the share is mounted): the next poll succeeds
        ready = LocalRegistryWriter(tmp_path / "not-mounted-yet", create=True)
        release(ready, make_version, keys, "1.0.0")
        poller.poll_now()
        assert changed.wait(EVENT_TIMEOUT_S)
    status = poller.status()
    assert status.transient_errors >= 1
    assert status.changes == 1
    assert store.current("birds").version == "1.0.0"


def test_poller_survives_a_failing_callback(
    local_registry: RegistryWriter, store: ModelStore, make_version: VersionFactory, keys: Keys
) -> None:
    called = threading.Event()

    def broken_hook(result: PullResult) -> None:
        called.set()
        raise RuntimeError("telemetry hook bug")

    release(local_registry, make_version, keys, "1.0.0")
    poller = ChannelPoller(local_registry, store, "birds", "stable", interval_s=3600, on_change=broken_hook)
    result = poller.run_once()
    assert called.is_set()
    assert result is not None and result.changed
    assert poller.status().unexpected_errors == 0


def test_gcs_poll_against_a_missing_bucket_is_transient(
    gcs_client: storage.Client, store: ModelStore, unique_name: str
) -> None:
    registry = GcsRegistryReader(f"missing-{unique_name}", client=gcs_client)
    poller = ChannelPoller(registry, store, "birds", "stable", interval_s=3600)
    assert poller.run_once() is None
    status = poller.status()
    assert status.transient_errors == 1
    assert "does not exist" in status.last_error


def test_a_missing_public_key_is_a_setup_error_not_a_refused_release(
    local_registry: RegistryWriter, store: ModelStore, make_version: VersionFactory, tmp_path, keys: Keys
) -> None:
    from edgefleet.kernel.errors import VerificationError

    local_registry.publish_version("birds", "1.0.0", make_version("birds", "1.0.0"))
    local_registry.promote("birds", "1.0.0", "stable", signing_key=keys.private)
    with pytest.raises(VerificationError, match="nowhere.pub"):
        pull_channel_once(local_registry, store, "birds", "stable", tmp_path / "nowhere.pub")
    assert store.refusals("birds") == []  # the release was never judged
    assert pull_channel_once(local_registry, store, "birds", "stable").outcome == "activated"
