"""Issue 23, item 4: the agent's own release, attacked in the registry. A bucket writer (anyone who can write
the registry, not the release key's holder) swaps the wheel, rewrites the manifest, publishes and promotes a
release signed with their own key, writes an unsigned pointer, or replays an older signed pointer. The updater
installs none of them: nothing runs, `current` does not move, and the reason names what failed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edgefleet.device.selfupdate import run_once
from edgefleet.kernel.contracts.agent_release import AGENT_MANIFEST_FILE, agent_channel_key, agent_file_key
from edgefleet.kernel.errors import VerificationError
from edgefleet.kernel.trust.signatures import generate_keypair
from tests.device.agent_release import AgentReleases, build_wheel


def _never(command, timeout_s):
    raise AssertionError(f"nothing may be installed or restarted: {command}")


@pytest.fixture
def releases(tmp_path: Path) -> AgentReleases:
    made = AgentReleases(tmp_path)
    (made.install_dir / "venv").mkdir()
    return made


def _installed_nothing(releases: AgentReleases) -> None:
    assert not (releases.install_dir / "current").exists()
    assert not list((releases.install_dir / "versions").glob("*/venv"))


def test_a_wheel_swapped_after_publishing_is_not_installed(releases: AgentReleases) -> None:
    releases.release("1.1.0")
    evil = build_wheel(releases.root / "evil", "1.1.0", "failed")
    target = releases.registry.root / agent_file_key("1.1.0", evil.name)
    genuine = target.read_bytes()
    target.write_bytes(evil.read_bytes()[: len(genuine)].ljust(len(genuine), b"\0"))  # same name and size
    assert target.read_bytes() != genuine
    with pytest.raises(VerificationError, match="does not match its signed agent manifest"):
        run_once(releases.config(), releases.device_view, runner=_never)
    _installed_nothing(releases)
    assert not (releases.install_dir / "versions" / "1.1.0" / "dist" / evil.name).exists()
    target.write_bytes(genuine + b"\0" * 4096)  # larger: refused before it is downloaded
    with pytest.raises(VerificationError, match="refused before downloading"):
        run_once(releases.config(), releases.device_view, runner=_never)
    _installed_nothing(releases)


def test_a_manifest_rewritten_under_a_signed_pointer_is_not_installed(releases: AgentReleases) -> None:
    releases.release("1.1.0")
    path = releases.registry.root / agent_file_key("1.1.0", AGENT_MANIFEST_FILE)
    path.write_text(json.dumps(json.loads(path.read_text()) | {"source_commit": "evil"}))
    with pytest.raises(VerificationError, match="not the manifest the pointer names"):
        run_once(releases.config(), releases.device_view, runner=_never)
    _installed_nothing(releases)


def test_a_release_signed_with_another_key_is_not_installed(releases: AgentReleases) -> None:
    # A key the keyring does not hold is, to a device, also a key it may not have received yet: it waits (never
    # installs, never refuses for good), as the model path does (`UnknownKeyError`).
    attacker, _ = generate_keypair()
    releases.release("6.6.6", key=attacker)  # published and promoted with the bucket writer's own key
    result = run_once(releases.config(), releases.device_view, runner=_never)
    assert result.outcome == "waiting" and "not signed by a key this keyring holds" in result.detail
    _installed_nothing(releases)


def test_an_unsigned_agent_pointer_is_refused(releases: AgentReleases) -> None:
    releases.release("1.1.0")
    key = releases.registry.root / agent_channel_key("stable")
    pointer = json.loads(key.read_text())
    unsigned = {name: pointer[name] for name in ("model", "channel", "version", "manifest_sha256")}
    key.write_text(json.dumps(unsigned | {"schema": "edgefleet.channel/1"}))
    result = run_once(releases.config(), releases.device_view, runner=_never)
    assert result.outcome == "refuse" and "unsigned" in result.detail
    _installed_nothing(releases)


def test_a_replayed_older_agent_pointer_is_refused(releases: AgentReleases, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_AGENT_STATUS", str(releases.status_file))
    releases.release("1.0.0")
    old_pointer = (releases.registry.root / agent_channel_key("stable")).read_bytes()
    releases.release("1.1.0")
    assert run_once(releases.config(), releases.device_view).outcome == "updated"
    (releases.registry.root / agent_channel_key("stable")).write_bytes(old_pointer)  # the old, signed pointer
    result = run_once(releases.config(), releases.device_view, runner=_never)
    assert result.outcome == "refuse" and "replayed" in result.detail
    assert os.readlink(releases.install_dir / "current") == "versions/1.1.0/venv"
