"""Issue 22 item 2 meets issue 23 item 4: rotating the release key must carry the agent's own releases along.

Before: `edgefleet keys resign` re-signed model channels only, and `edgefleet keys retire` looked at model
channels only, so retiring the old key left `agent/channels/*.json` and the agent manifests they name signed by a
key no device holds any more: every updater waits for ever, and no agent upgrade reaches the fleet again.

Now: `resign` re-signs the agent channel pointers (a new counter, the same version, manifest sha256, downgrade
flag and move time) and adds the new key's signature to each agent manifest in use (`agent-manifest.sig`
revision 2, one `<key id> <base64>` line per key; the manifest's bytes, and so the sha256 the pointer names,
stay); `retire` refuses while an agent channel or an agent manifest in use needs the old key.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgefleet.device.selfupdate import load_state, run_once
from edgefleet.flows.trust.key_rotation import add_key, resign_in_use, retire_key_file, retirement_blockers
from edgefleet.kernel.contracts.agent_release import (
    AGENT_MANIFEST_FILE,
    AGENT_SIGNATURE_FILE,
    agent_channel_key,
    agent_file_key,
)
from edgefleet.kernel.contracts.manifest import ChannelPointer
from edgefleet.kernel.trust.release_keyring import load_keyring
from edgefleet.kernel.trust.signatures import (
    decode_signatures,
    generate_keypair,
    key_id,
    save_private_key,
    save_public_key,
)
from tests.device.agent_release import AgentReleases


@pytest.fixture
def rotating(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Agent 1.1.0 on channel stable signed by the old key; a keyring with the old and the new key (step 1)."""
    releases = AgentReleases(tmp_path)
    (releases.install_dir / "venv").mkdir()
    monkeypatch.setenv("FAKE_AGENT_STATUS", str(releases.status_file))
    releases.release("1.1.0")
    new_private, new_public = generate_keypair()
    ring = tmp_path / "ring"
    add_key(ring, releases.public_key)
    add_key(ring, save_public_key(new_public, tmp_path / "new.pub"))
    return releases, ring, new_private


def _pointer(releases: AgentReleases) -> ChannelPointer:
    return ChannelPointer.model_validate_json((releases.registry.root / agent_channel_key("stable")).read_bytes())


def test_retiring_the_old_key_is_refused_while_an_agent_channel_needs_it(rotating) -> None:
    releases, ring, _new = rotating
    old = key_id(releases.release_key.public_key())
    blockers = retirement_blockers(releases.registry, load_keyring(ring), old)
    assert any(blocker.startswith("agent/stable") for blocker in blockers), blockers


def test_resign_covers_agent_channels_and_the_manifests_they_name(rotating) -> None:
    releases, ring, new = rotating
    manifest_path = releases.registry.root / agent_file_key("1.1.0", AGENT_MANIFEST_FILE)
    manifest_before = manifest_path.read_bytes()
    before = _pointer(releases)
    results = resign_in_use(releases.registry, load_keyring(ring), new, validity=timedelta(days=7))
    agent = [result for result in results if result.channel == "stable" and result.model == "agent"]
    assert [result.outcome for result in agent] == ["resigned"], results
    after = _pointer(releases)
    assert after.key_id == key_id(new.public_key()) and after.counter > before.counter
    assert (after.version, after.manifest_sha256, after.downgrade, after.updated_at) == (
        before.version, before.manifest_sha256, before.downgrade, before.updated_at)
    assert manifest_path.read_bytes() == manifest_before  # same bytes, same sha256 the pointer names
    assert hashlib.sha256(manifest_before).hexdigest() == after.manifest_sha256
    signatures = decode_signatures((releases.registry.root / agent_file_key("1.1.0", AGENT_SIGNATURE_FILE))
                                   .read_bytes())
    assert {one.key_id for one in signatures} == {key_id(releases.release_key.public_key()), key_id(new.public_key())}
    old = key_id(releases.release_key.public_key())
    assert retirement_blockers(releases.registry, load_keyring(ring), old) == []
    again = resign_in_use(releases.registry, load_keyring(ring), new)
    assert [r.outcome for r in again if r.model == "agent"] == ["current"]  # idempotent: no third line


def test_after_resign_and_retire_a_device_holding_only_the_new_key_updates(rotating) -> None:
    releases, ring, new = rotating
    resign_in_use(releases.registry, load_keyring(ring), new)
    retire_key_file(ring, key_id(releases.release_key.public_key()))
    result = run_once(releases.config(public_key=ring), releases.device_view)  # the ring: the new key only
    assert result.outcome == "updated", result.detail
    assert load_state(releases.install_dir).refused == ()


def test_the_keys_commands_resign_and_retire_with_agent_releases(rotating, tmp_path: Path) -> None:
    from edgefleet.cli import app

    releases, ring, new = rotating
    old = key_id(releases.release_key.public_key())
    common = ["--registry", str(releases.registry.root)]
    refused = CliRunner().invoke(app, ["keys", "retire", str(ring), old, *common])
    assert refused.exit_code != 0 and "agent/stable" in refused.output, refused.output
    key = save_private_key(new, tmp_path / "new.key")
    resigned = CliRunner().invoke(app, ["keys", "resign", "--ring", str(ring), "--signing-key", str(key), *common])
    assert resigned.exit_code == 0 and "agent/stable: resigned" in resigned.output, resigned.output
    retired = CliRunner().invoke(app, ["keys", "retire", str(ring), old, *common])
    assert retired.exit_code == 0, retired.output
