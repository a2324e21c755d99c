"""The agent updater verifies with the device's release keyring (issue 22 item 2 meets issue 23 item 4): the
keyring directory deploy-agent installs (`keys/release.d/<key id>.pub`) is accepted as `public_key`, a key file
still is (old installs), each signature is checked with the key its key id names, and a release signed by a key
the device does not hold yet is waited for (nothing installed, nothing refused for good), then installed once
the key arrives."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from edgefleet.device.selfupdate import load_state, run_once
from edgefleet.kernel.contracts.agent_release import AGENT_SIGNATURE_FILE, agent_file_key
from edgefleet.kernel.errors import VerificationError
from edgefleet.kernel.trust.release_keyring import key_file_name
from edgefleet.kernel.trust.signatures import generate_keypair, key_id, save_public_key
from tests.device.agent_release import AgentReleases


@pytest.fixture
def releases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AgentReleases:
    made = AgentReleases(tmp_path)
    (made.install_dir / "venv").mkdir()
    monkeypatch.setenv("FAKE_AGENT_STATUS", str(made.status_file))
    return made


def _never(command, timeout_s):
    raise AssertionError(f"nothing may be installed or restarted: {command}")


def _ring(releases: AgentReleases, *keys) -> Path:
    """`keys/release.d/` as deploy-agent installs it: one `<key id>.pub` per key, no `release.pub`."""
    ring = releases.root / "keys" / "release.d"
    ring.mkdir(parents=True, exist_ok=True)
    for key in keys:
        save_public_key(key, ring / key_file_name(key))
    return ring


def test_the_updater_verifies_with_the_keyring_directory_deploy_agent_installs(releases: AgentReleases) -> None:
    ring = _ring(releases, releases.release_key.public_key())
    releases.release("1.1.0")
    result = run_once(releases.config(public_key=ring), releases.device_view)
    assert result.outcome == "updated", result.detail
    assert os.readlink(releases.install_dir / "current") == "versions/1.1.0/venv"


def test_a_release_by_a_key_the_device_does_not_hold_yet_waits_then_installs(releases: AgentReleases) -> None:
    new_key, new_public = generate_keypair()
    ring = _ring(releases, releases.release_key.public_key())
    releases.release("2.0.0", key=new_key)  # signed with the new key before the device got it
    waiting = run_once(releases.config(public_key=ring), releases.device_view, runner=_never)
    assert waiting.outcome == "waiting" and key_id(new_public) in waiting.detail, waiting.detail
    assert not (releases.install_dir / "current").exists()
    assert load_state(releases.install_dir).refused == ()  # never a lasting refusal
    _ring(releases, new_public)  # deploy-agent installs the new key
    result = run_once(releases.config(public_key=ring), releases.device_view)
    assert result.outcome == "updated", result.detail


def test_a_manifest_signed_only_by_a_key_the_device_lacks_waits(releases: AgentReleases) -> None:
    """The pointer verifies (a known key) but the manifest's only signature is by another key: wait, not refuse."""
    releases.release("1.1.0")
    other, other_public = generate_keypair()
    signature = other.sign(b"edgefleet.agent-manifest/1\n" + (releases.registry.root / agent_file_key(
        "1.1.0", "agent-manifest.json")).read_bytes())
    (releases.registry.root / agent_file_key("1.1.0", AGENT_SIGNATURE_FILE)).write_bytes(
        key_id(other_public).encode() + b" " + base64.b64encode(signature) + b"\n")
    ring = _ring(releases, releases.release_key.public_key())
    result = run_once(releases.config(public_key=ring), releases.device_view, runner=_never)
    assert result.outcome == "waiting" and key_id(other_public) in result.detail, result.detail
    assert load_state(releases.install_dir).refused == ()


def test_a_forged_signature_naming_a_held_key_is_refused(releases: AgentReleases) -> None:
    """Tampering is not waiting: a signature that names the device's key and does not verify fails loudly."""
    releases.release("1.1.0")
    attacker, _ = generate_keypair()
    manifest = (releases.registry.root / agent_file_key("1.1.0", "agent-manifest.json")).read_bytes()
    forged = attacker.sign(b"edgefleet.agent-manifest/1\n" + manifest)
    held = key_id(releases.release_key.public_key())
    (releases.registry.root / agent_file_key("1.1.0", AGENT_SIGNATURE_FILE)).write_bytes(
        held.encode() + b" " + base64.b64encode(forged) + b"\n")
    ring = _ring(releases, releases.release_key.public_key())
    with pytest.raises(VerificationError, match="signature check failed"):
        run_once(releases.config(public_key=ring), releases.device_view, runner=_never)
    assert not (releases.install_dir / "current").exists()


def test_a_single_key_file_still_works(releases: AgentReleases) -> None:
    releases.release("1.1.0")
    result = run_once(releases.config(public_key=releases.public_key), releases.device_view)
    assert result.outcome == "updated", result.detail
    assert json.loads((releases.install_dir / "selfupdate.json").read_text())["running"].startswith("1.1.0 ")
