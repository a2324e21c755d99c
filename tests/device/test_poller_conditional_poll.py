"""An idle poll costs one small request: the channel pointer is read again only when its tag (GCS generation, a
local file's inode/size/times) changed. And polls are spread by jitter."""

from __future__ import annotations

import time

from edgefleet.device.poller import poll_delay
from edgefleet.device.pull import pull_channel_once
from edgefleet.device.registry import GcsRegistryReader, LocalRegistryReader
from edgefleet.device.registry.local import RACY_WINDOW_S
from edgefleet.device.store import ModelStore
from edgefleet.flows.registry import GcsRegistryWriter, LocalRegistryWriter, RegistryWriter

from .store_fixtures import Keys, VersionFactory, publish_versions


class CountingLocal(LocalRegistryReader):
    reads = 0

    def _read_versioned(self, key: str) -> tuple[bytes | None, int]:
        self.reads += 1
        return super()._read_versioned(key)


class CountingGcs(GcsRegistryReader):
    reads = 0

    def _read_versioned(self, key: str) -> tuple[bytes | None, int]:
        self.reads += 1
        return super()._read_versioned(key)


def _reader(registry: RegistryWriter) -> CountingLocal | CountingGcs:
    if isinstance(registry, GcsRegistryWriter):
        return CountingGcs(registry.bucket_name, registry.prefix, client=registry.client)
    assert isinstance(registry, LocalRegistryWriter)
    return CountingLocal(registry.root)


def test_an_idle_poll_does_not_read_the_pointer_again(
    registry: RegistryWriter, store: ModelStore, make_version: VersionFactory, keys: Keys
) -> None:
    publish_versions(registry, make_version, "1.0.0", "1.1.0")
    registry.promote("birds", "1.0.0", "stable", signing_key=keys.private)
    reader = _reader(registry)
    if isinstance(reader, CountingLocal):  # a file changed in the last moments is always read again
        time.sleep(RACY_WINDOW_S + 0.5)
    assert pull_channel_once(reader, store, "birds", "stable").outcome == "activated"
    assert reader.reads == 1
    for _ in range(3):
        assert pull_channel_once(reader, store, "birds", "stable").outcome == "unchanged"
    assert reader.reads == 1
    registry.promote("birds", "1.1.0", "stable", signing_key=keys.private)
    moved = pull_channel_once(reader, store, "birds", "stable")
    assert (moved.outcome, moved.version, reader.reads) == ("activated", "1.1.0", 2)


def test_poll_jitter_spreads_the_waits_evenly_around_the_interval() -> None:
    assert poll_delay(30, 0.0, 0.9) == 30
    assert (poll_delay(30, 0.1, 0.0), poll_delay(30, 0.1, 0.5)) == (27, 30)
    assert poll_delay(30, 0.1, 0.999_999) < 33
