"""Issue 20 item 3: downgrade after an older agent. An agent from before the version floor switched
`current` without recording anything (push rollouts, operator activations), so a store it leaves behind
says only what is installed and current, and its channel record (if it pulled at all) may name a lower
version than the one running. A replayed old signed pointer used to activate the old version there; the
upgraded agent now derives the floor from what is current (and the old record), and refuses it."""

from __future__ import annotations

from pathlib import Path

from edgefleet.device.pull import pull_channel_once
from edgefleet.device.store import ModelStore
from edgefleet.flows.registry import LocalRegistryWriter
from edgefleet.kernel.contracts.layout import CURRENT_POINTER, PREVIOUS_POINTER
from edgefleet.kernel.fsutil import switch_symlink
from tests.device.store_fixtures import Keys, VersionFactory
from tests.security.test_downgrade_by_replay import replay_refused, signed_release
from tests.security.test_downgrade_without_channel_record import release


def older_agent_activates(store: ModelStore, directory: Path, version: str) -> None:
    """What an agent from before the floor left on disk: the version installed, the symlinks switched,
    nothing else recorded."""
    store.install(directory)
    model_dir = store.model_dir("birds")
    current = store.pointer("birds", CURRENT_POINTER)
    if current is not None:
        switch_symlink(model_dir / PREVIOUS_POINTER, current)
    switch_symlink(model_dir / CURRENT_POINTER, version)


def test_replay_on_a_store_an_older_push_mode_agent_left_is_refused(
    local_registry: LocalRegistryWriter, store: ModelStore, make_version: VersionFactory, keys: Keys
) -> None:
    first, old = release(local_registry, make_version, keys, "1.0.0")
    older_agent_activates(store, first, "1.0.0")
    older_agent_activates(store, release(local_registry, make_version, keys, "1.1.0")[0], "1.1.0")
    # the agent is upgraded and set to follow the channel; the attacker puts the old pointer back
    replay_refused(local_registry, store, old, "lower than 1.1.0", keeps="1.1.0")


def test_replay_after_an_older_agent_pulled_then_was_pushed_past_its_record_is_refused(
    local_registry: LocalRegistryWriter, store: ModelStore, make_version: VersionFactory, keys: Keys
) -> None:
    """The older agent pulled 1.0.0 and 1.1.0 (its record: floor 1.1.0, the 1.1.0 pointer's counter), then
    an operator pushed 1.2.0 over SSH, which that agent did not record. Replaying the 1.1.0 pointer (same
    counter as the record, so not a 'replay' by counter) must not take the device back to 1.1.0."""
    signed_release(local_registry, make_version, keys, "1.0.0")
    assert pull_channel_once(local_registry, store, "birds", "stable").outcome == "activated"
    kept = signed_release(local_registry, make_version, keys, "1.1.0")
    assert pull_channel_once(local_registry, store, "birds", "stable").outcome == "activated"
    for name in [path.name for path in store.model_dir("birds").glob(".*") if path.name != ".channel.json"]:
        (store.model_dir("birds") / name).unlink()  # the older agent kept no other record
    older_agent_activates(store, make_version("birds", "1.2.0"), "1.2.0")
    replay_refused(local_registry, store, kept, "lower than 1.2.0", keeps="1.2.0")
