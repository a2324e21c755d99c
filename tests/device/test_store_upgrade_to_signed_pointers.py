"""The upgrade path from a fleet that ran the old default (`registry.require_signed_pointers: false`,
pipelines writing unsigned pointers) to the new one, with no device stopping: the pipelines sign first,
then the agents flip. Each step is a poll of a device that keeps running its version throughout."""

from __future__ import annotations

from pathlib import Path

from edgefleet.device.agent.config import AgentConfig, load_config
from edgefleet.device.poller import ChannelPoller
from edgefleet.device.pull import PullResult
from edgefleet.device.store import ModelStore
from edgefleet.flows.registry import LocalRegistryWriter
from edgefleet.kernel.contracts.manifest import ChannelPointer

from .store_fixtures import Keys, VersionFactory, publish_versions
from .test_pull import overwrite_object

KEY = "models/birds/channels/stable.json"


def agent_config(tmp_path: Path, store: ModelStore, registry: LocalRegistryWriter, extra: str = "") -> AgentConfig:
    path = tmp_path / "agent.yaml"
    path.write_text(f"device_id: cam-1\nmodel: birds\nroot: {store.root}\nregistry:\n  uri: {registry.root}\n{extra}")
    return load_config(path)


def poller(config: AgentConfig, registry: LocalRegistryWriter, store: ModelStore,
           problems: list[PullResult]) -> ChannelPoller:
    """The agent's poller as the agent builds it from its config."""
    return ChannelPoller(registry, store, config.model, config.registry.channel, on_refusal=problems.append,
                         require_signed=config.registry.require_signed_pointers)


def test_the_default_requires_signed_pointers_and_false_is_the_explicit_transition_setting(
    tmp_path: Path, store: ModelStore, local_registry: LocalRegistryWriter
) -> None:
    assert agent_config(tmp_path, store, local_registry).registry.require_signed_pointers is True
    transition = agent_config(tmp_path, store, local_registry, "  require_signed_pointers: false\n")
    assert transition.registry.require_signed_pointers is False


def test_an_old_default_fleet_upgrades_without_a_device_stopping(
    tmp_path: Path, store: ModelStore, local_registry: LocalRegistryWriter, make_version: VersionFactory,
    keys: Keys,
) -> None:
    problems: list[PullResult] = []
    publish_versions(local_registry, make_version, "1.0.0", "1.1.0", "1.2.0")
    # Before: an agent on the transition setting follows unsigned pointers.
    local_registry.promote("birds", "1.0.0", "stable")
    old = poller(agent_config(tmp_path, store, local_registry, "  require_signed_pointers: false\n"),
                 local_registry, store, problems)
    assert old.run_once().outcome == "activated"

    # Step 1: the pipelines sign. The channel's pointer is re-written signed (same version), and the next
    # release is promoted signed; the not-yet-flipped agent takes both (and from then on refuses unsigned
    # pointers on that channel).
    local_registry.promote("birds", "1.0.0", "stable", signing_key=keys.private)
    assert old.run_once().outcome == "unchanged"
    local_registry.promote("birds", "1.1.0", "stable", signing_key=keys.private)
    assert old.run_once().outcome == "activated"

    # Step 2: the agents flip to the new default (a restart with the new config; the version keeps running).
    new = poller(agent_config(tmp_path, store, local_registry), local_registry, store, problems)
    assert new.run_once().outcome == "unchanged"
    local_registry.promote("birds", "1.2.0", "stable", signing_key=keys.private)
    assert new.run_once().outcome == "activated"
    assert problems == []  # no device saw a refused pointer during the upgrade

    # After: an unsigned pointer (what the old pipeline wrote) is refused, the device stays where it is.
    sha = local_registry.read_manifest("birds", "1.2.0").manifest_sha256
    unsigned = ChannelPointer(model="birds", channel="stable", version="1.2.0", manifest_sha256=sha)
    overwrite_object(local_registry, KEY, unsigned.to_json_bytes())
    assert new.run_once().outcome == "pointer_refused"
    assert store.current("birds").version == "1.2.0"


def test_agents_flipped_before_the_pipelines_sign_keep_running_what_they_have(
    tmp_path: Path, store: ModelStore, local_registry: LocalRegistryWriter, make_version: VersionFactory,
    keys: Keys,
) -> None:
    """The wrong order: no device stops, none moves, each reports the unsigned pointer once, and they
    follow again as soon as the pipelines sign."""
    problems: list[PullResult] = []
    publish_versions(local_registry, make_version, "1.0.0", "1.1.0")
    local_registry.promote("birds", "1.0.0", "stable")
    old = poller(agent_config(tmp_path, store, local_registry, "  require_signed_pointers: false\n"),
                 local_registry, store, problems)
    assert old.run_once().outcome == "activated"
    local_registry.promote("birds", "1.1.0", "stable")

    new = poller(agent_config(tmp_path, store, local_registry), local_registry, store, problems)
    assert new.run_once().outcome == "pointer_refused"
    assert new.run_once().outcome == "pointer_refused"
    assert store.current("birds").version == "1.0.0"
    assert [problem.outcome for problem in problems] == ["pointer_refused"]
    assert "requires signed pointers" in problems[0].reason

    local_registry.promote("birds", "1.1.0", "stable", signing_key=keys.private)
    assert new.run_once().outcome == "activated"
