"""The on-device model store: install, activate, rollback, pointers, atomicity, concurrent readers."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from edgefleet.device.store import ModelStore
from edgefleet.kernel import fsutil
from edgefleet.kernel.contracts.layout import MANIFEST_FILE
from edgefleet.kernel.errors import StoreError, VerificationError

from .store_fixtures import Keys, VersionFactory, activate_versions


def snapshot(root: Path) -> dict[str, str | bytes]:
    """Every file and symlink under root (symlink targets, file contents): to prove 'unchanged'."""
    state: dict[str, str | bytes] = {}
    for directory, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(directory) / name
            relative = str(path.relative_to(root))
            if path.is_symlink():
                state[relative] = "-> " + os.readlink(path)
            elif path.is_file() and name != ".lock":
                state[relative] = path.read_bytes()
    return state


def test_install_activate_and_pointers(store: ModelStore, make_version: VersionFactory) -> None:
    manifest = store.install(make_version("birds", "1.0.0"))
    assert (manifest.model, manifest.version) == ("birds", "1.0.0")
    assert store.versions("birds") == ["1.0.0"]
    assert store.current("birds") is None  # installing does not activate

    current = store.activate("birds", "1.0.0")
    assert current.version == "1.0.0"
    assert current.path == store.root / "models" / "birds" / "1.0.0"
    assert os.readlink(store.root / "models" / "birds" / "current") == "1.0.0"
    assert store.current("birds") == current
    assert store.previous("birds") is None

    store.install(make_version("birds", "1.1.0"))
    store.activate("birds", "1.1.0")
    assert store.current("birds").version == "1.1.0"
    assert store.previous("birds").version == "1.0.0"
    assert store.models() == ["birds"]


def test_activating_the_current_version_keeps_previous(
    store: ModelStore, make_version: VersionFactory
) -> None:
    activate_versions(store, make_version, "1.0.0", "1.1.0")
    store.activate("birds", "1.1.0")
    assert (store.current("birds").version, store.previous("birds").version) == ("1.1.0", "1.0.0")


def test_rollback_swaps_current_and_previous(store: ModelStore, make_version: VersionFactory) -> None:
    activate_versions(store, make_version, "1.0.0", "2.0.0")

    back = store.rollback("birds")
    assert back.version == "1.0.0"
    assert (store.current("birds").version, store.previous("birds").version) == ("1.0.0", "2.0.0")
    store.rollback("birds")  # and forward again
    assert (store.current("birds").version, store.previous("birds").version) == ("2.0.0", "1.0.0")


def test_rollback_without_previous_is_a_clear_error(store: ModelStore, make_version: VersionFactory) -> None:
    store.install(make_version("birds", "1.0.0"))
    store.activate("birds", "1.0.0")
    before = snapshot(store.root)
    with pytest.raises(StoreError, match="no previous version") as caught:
        store.rollback("birds")
    assert "edgefleet-agent activate birds" in caught.value.fix
    assert snapshot(store.root) == before


def test_installing_the_same_version_again_is_a_no_op(
    store: ModelStore, make_version: VersionFactory
) -> None:
    source = make_version("birds", "1.0.0")
    store.install(source)
    before = snapshot(store.root)
    store.install(source)
    assert snapshot(store.root) == before


def test_different_content_under_an_installed_version_is_refused(
    store: ModelStore, make_version: VersionFactory
) -> None:
    store.install(make_version("birds", "1.0.0"))
    other = make_version("birds", "1.0.0", files={"model_cpu.tflite": b"other content"})
    before = snapshot(store.root)
    with pytest.raises(StoreError, match="already installed .* with different content") as caught:
        store.install(other)
    assert "immutable" in caught.value.fix
    assert snapshot(store.root) == before


def test_tampered_source_is_not_installed(store: ModelStore, make_version: VersionFactory) -> None:
    source = make_version("birds", "1.0.0")
    (source / "labels.txt").write_text("background\nrobin\nEAGLE\n")
    with pytest.raises(VerificationError, match="labels.txt"):
        store.install(source)
    assert store.versions("birds") == []
    assert not (store.root / "models" / "birds" / "1.0.0").exists()


def test_wrong_key_is_refused_naming_the_store_key_file(
    store: ModelStore, make_version: VersionFactory, other_keys: Keys
) -> None:
    source = make_version("birds", "1.0.0", private_key=other_keys.private)
    with pytest.raises(VerificationError) as caught:
        store.install(source)
    assert str(store.root / "keys" / "release.pub") in caught.value.message
    assert store.versions("birds") == []


def test_failure_in_the_middle_of_an_install_leaves_the_store_unchanged(
    store: ModelStore, make_version: VersionFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.install(make_version("birds", "1.0.0"))
    store.activate("birds", "1.0.0")
    before = snapshot(store.root)
    real_copy = fsutil.copy_regular_synced
    copies: list[str] = []

    def copy_then_fail_on_the_third(source: Path, dest: Path, **options: Any) -> None:
        # A disk error while copying: the store's own code must clean up, the copy itself is not under test.
        copies.append(source.name)
        if len(copies) == 3:
            raise OSError(28, "No space left on device")
        real_copy(source, dest, **options)

    monkeypatch.setattr("edgefleet.device.store.copy_regular_synced", copy_then_fail_on_the_third)
    with pytest.raises(OSError, match="No space left"):
        store.install(make_version("birds", "1.1.0"))
    assert len(copies) == 3
    assert snapshot(store.root) == before
    assert store.versions("birds") == ["1.0.0"]


def test_activate_verifies_again_and_refuses_a_tampered_install(
    store: ModelStore, make_version: VersionFactory
) -> None:
    for version in ("1.0.0", "1.1.0"):
        store.install(make_version("birds", version))
    store.activate("birds", "1.0.0")
    installed = store.root / "models" / "birds" / "1.1.0" / "model_cpu.tflite"
    installed.write_bytes(installed.read_bytes()[:-1] + b"X")
    before = snapshot(store.root)
    with pytest.raises(VerificationError, match="model_cpu.tflite"):
        store.activate("birds", "1.1.0")
    assert snapshot(store.root) == before
    assert store.current("birds").version == "1.0.0"


def test_activate_unknown_version_is_a_clear_error(store: ModelStore, make_version: VersionFactory) -> None:
    store.install(make_version("birds", "1.0.0"))
    with pytest.raises(StoreError, match="version 9.9.9 of model birds is not installed") as caught:
        store.activate("birds", "9.9.9")
    assert "1.0.0" in caught.value.fix


def test_remove_refuses_current_and_previous(store: ModelStore, make_version: VersionFactory) -> None:
    activate_versions(store, make_version, "1.0.0", "1.1.0", "1.2.0")
    with pytest.raises(StoreError, match="is the current version"):
        store.remove("birds", "1.2.0")
    with pytest.raises(StoreError, match="is the previous version"):
        store.remove("birds", "1.1.0")
    store.remove("birds", "1.0.0")
    assert store.versions("birds") == ["1.1.0", "1.2.0"]


def test_versions_sort_semantically(store: ModelStore, make_version: VersionFactory) -> None:
    for version in ("1.10.0", "1.9.0", "1.2.0"):
        store.install(make_version("birds", version))
    assert store.versions("birds") == ["1.2.0", "1.9.0", "1.10.0"]


def test_refusals_are_remembered_per_version_and_manifest(store: ModelStore) -> None:
    sha = "ab" * 32
    store.mark_refused("birds", "2.0.0", sha, "smoke test failed")
    assert store.refusal("birds", "2.0.0", sha).reason == "smoke test failed"
    assert store.refusal("birds", "2.0.0", "cd" * 32) is None
    assert ModelStore(store.root).refusal("birds", "2.0.0", sha) is not None  # persisted on disk
    assert store.clear_refused("birds") == 1
    assert store.refusal("birds", "2.0.0", sha) is None


def test_concurrent_reader_always_sees_a_complete_verified_current(
    store: ModelStore, make_version: VersionFactory
) -> None:
    """A reader resolving `current` and reading its files while versions are switched never sees a
    missing pointer, a partial directory or a manifest that does not match the directory."""
    versions = ["1.0.0", "1.1.0", "1.2.0"]
    store.install(make_version("birds", versions[0]))
    store.activate("birds", versions[0])
    stop = threading.Event()
    problems: list[str] = []
    reads = 0

    def reader() -> None:
        nonlocal reads
        link = store.root / "models" / "birds" / "current"
        while not stop.is_set():
            try:
                directory = link.parent / os.readlink(link)
                manifest_bytes = (directory / MANIFEST_FILE).read_bytes()
                version = directory.name
                if f'"version": "{version}"' not in manifest_bytes.decode():
                    problems.append(f"manifest of {directory} is not for {version}")
                for name in ("model_cpu.tflite", "model_edgetpu.tflite", "labels.txt"):
                    (directory / name).read_bytes()
                reads += 1
            except OSError as error:
                problems.append(repr(error))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for version in versions[1:]:
            store.install(make_version("birds", version))  # installs appear while the reader reads
        for round_number in range(1, 31):
            store.activate("birds", versions[round_number % len(versions)])
            if round_number % 4 == 0:
                store.rollback("birds")
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert problems == []
    assert reads > 0
