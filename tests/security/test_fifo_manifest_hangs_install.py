"""Issue 20 item 9: a FIFO as `manifest.json` hangs install. Whoever can write a bundle directory (or a
local registry) put a named pipe, a device file or a symlink to one where the manifest belongs, and
`edgefleet-agent install` / `pull` blocked forever in `open()` (or read `/dev/zero` until memory ran out).
Manifests, signatures and pointers are now read as regular files only, opened without blocking and with
a size cap, and anything else is refused with an error that names the file.

Each case runs the real CLI in a child process with a generous timeout and a memory limit, so the test
fails (rather than hangs, or eats the machine's memory) where the bug is back."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from edgefleet.device.store import ModelStore
from edgefleet.flows.registry import LocalRegistryWriter
from edgefleet.kernel.contracts.layout import MANIFEST_FILE
from tests.device.store_fixtures import Keys, VersionFactory

CHILD_TIMEOUT_S = 180  # a CLI start on a loaded CI machine takes seconds; a hang takes forever
CHILD_MEMORY_BYTES = 4 << 30
HUGE_BYTES = 1 << 30  # sparse: costs no disk


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY_BYTES, CHILD_MEMORY_BYTES))


def agent(*args: str) -> subprocess.CompletedProcess[str]:
    """`edgefleet-agent ARGS` in a child process; a hang fails the test instead of blocking it."""
    code = "from edgefleet.device.cli import app; app()"
    try:
        return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                              timeout=CHILD_TIMEOUT_S, preexec_fn=_limit_memory)
    except subprocess.TimeoutExpired:
        pytest.fail(f"edgefleet-agent {' '.join(args)} hung for {CHILD_TIMEOUT_S} s")


def fifo(path: Path) -> None:
    os.mkfifo(path)


def symlink_to_fifo(path: Path) -> None:
    os.mkfifo(path.with_name("pipe"))
    path.symlink_to(path.with_name("pipe"))


def device_file(path: Path) -> None:
    path.symlink_to("/dev/zero")


def huge_file(path: Path) -> None:
    with open(path, "wb") as handle:
        handle.truncate(HUGE_BYTES)


PLANTS: dict[str, Callable[[Path], None]] = {
    "fifo": fifo, "symlink to a fifo": symlink_to_fifo, "device file": device_file, "huge file": huge_file,
}
REASONS = {"fifo": "not a regular file", "symlink to a fifo": "not a regular file",
           "device file": "not a regular file", "huge file": "bytes"}


@pytest.mark.parametrize("plant", PLANTS)
def test_install_refuses_a_manifest_that_is_not_a_regular_file(
    store: ModelStore, make_version: VersionFactory, plant: str
) -> None:
    bundle = make_version("birds", "1.0.0")
    (bundle / MANIFEST_FILE).unlink()
    PLANTS[plant](bundle / MANIFEST_FILE)

    result = agent("install", str(bundle), "--root", str(store.root))

    assert result.returncode == 2, result.stderr[-2000:]
    assert REASONS[plant] in result.stderr and MANIFEST_FILE in result.stderr
    assert "Traceback" not in result.stderr
    assert store.versions("birds") == []


@pytest.mark.parametrize("plant", ["fifo", "device file", "huge file"])
def test_pull_refuses_registry_objects_that_are_not_regular_files(
    local_registry: LocalRegistryWriter, store: ModelStore, make_version: VersionFactory, keys: Keys,
    plant: str,
) -> None:
    local_registry.publish_version("birds", "1.0.0", make_version("birds", "1.0.0"))
    local_registry.promote("birds", "1.0.0", "stable", signing_key=keys.private)
    manifest = local_registry.root / "models" / "birds" / "1.0.0" / MANIFEST_FILE
    manifest.unlink()
    PLANTS[plant](manifest)

    result = agent("pull", "--registry", str(local_registry.root), "--model", "birds", "--channel", "stable",
                   "--root", str(store.root))

    assert result.returncode == 2, result.stderr[-2000:]
    assert REASONS[plant] in result.stderr and "Traceback" not in result.stderr
    assert store.current("birds") is None


def test_pull_refuses_a_fifo_as_the_channel_pointer(
    local_registry: LocalRegistryWriter, store: ModelStore, make_version: VersionFactory, keys: Keys
) -> None:
    local_registry.publish_version("birds", "1.0.0", make_version("birds", "1.0.0"))
    pointer = local_registry.root / "models" / "birds" / "channels" / "stable.json"
    pointer.parent.mkdir(parents=True)
    os.mkfifo(pointer)

    result = agent("pull", "--registry", str(local_registry.root), "--model", "birds", "--channel", "stable",
                   "--root", str(store.root))

    assert result.returncode == 2, result.stderr[-2000:]
    assert "not a regular file" in result.stderr and "stable.json" in result.stderr
