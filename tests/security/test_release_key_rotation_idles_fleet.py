"""Issue 22 item 2, rotating the release key idles the fleet.

The README's rotation was "install a new release.pub on the devices (deploy-agent) before signing with the new
key". The restarted agent then verified the version it runs (signed with the old key) against the new key alone,
refused it and recorded that refusal for good: the device stayed idle even once the old key was back, until an
operator ran `pull --retry-refused` by hand. Now a signature by a key the device does not hold is never a refusal
of the release (it is retried when the keyring changes), and a keyring of several keys (`keys/release.d/`) lets
both keys be trusted while the fleet moves from one to the other.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from edgefleet.device.agent.config import load_config
from edgefleet.device.agent.loop import Agent
from edgefleet.device.runtime.engine import Engine
from edgefleet.device.runtime.golden import compute_golden
from edgefleet.device.store import ModelStore
from edgefleet.flows.release.bundle import build_manifest, write_signed_version
from edgefleet.kernel.contracts.manifest import SigningInfo
from edgefleet.kernel.errors import VerificationError
from edgefleet.kernel.trust.signatures import generate_keypair, key_id, save_public_key
from tests.device.agent.conftest import GOLDEN_SEEDS, MODEL, Releases
from tests.device.agent.test_loop import running, wait_until

WAIT_S = 90.0


class SignedReleases(Releases):
    """Versions as the release flow signs them: the manifest names its signing key (`signing.key_id`)."""

    def build(self, version: str, model_file: str = "mobilenet_v1_0.25_128_quant.tflite",
              labels: str = "imagenet_labels.txt", **_: object) -> Path:
        with Engine.open(self.coral / model_file) as engine:
            golden = compute_golden(engine, GOLDEN_SEEDS)
        dest = self.tmp / "releases" / version
        dest.mkdir(parents=True)
        shutil.copyfile(self.coral / model_file, dest / "model_cpu.tflite")
        shutil.copyfile(self.coral / labels, dest / "labels.txt")
        manifest = build_manifest(dest, model=MODEL, version=version, golden=golden)
        signing = SigningInfo(key_id=key_id(self.private_key.public_key()))
        write_signed_version(dest, manifest.model_copy(update={"signing": signing}), self.private_key)
        return dest


@pytest.fixture
def releases(coral_data: Path, tmp_path: Path) -> Releases:
    made = SignedReleases(coral_data, tmp_path)
    made.store = ModelStore(made.root)  # verifying with the device's own key files, as the agent does
    return made


def key_file_name(public_key) -> str:
    """`<key id>.pub`: how a keyring directory names a key file (spelled out: the test ran before the keyring)."""
    return f"{key_id(public_key)}.pub"


def agent_for(releases: Releases) -> Agent:
    return Agent(load_config(releases.agent_config("swap:\n  watch_interval_s: 0.1\nstatus:\n  interval_s: 0.2\n")))


def inferring(agent: Agent, version: str, frames: int = 5) -> Callable[[], bool]:
    """True once `agent` ran `frames` more frames on `version` (from the moment this is called)."""
    start = agent.stats.frames

    def check() -> bool:
        running_model = agent.watcher.running
        return running_model is not None and running_model.version == version and agent.stats.frames >= start + frames
    return check


def test_replacing_release_pub_as_the_readme_said_records_no_refusal_and_recovers(releases):
    releases.install("1.0.0")
    with running(agent_for(releases)) as agent:
        wait_until(inferring(agent, "1.0.0"), "frames on 1.0.0", WAIT_S)
    old_public = releases.public_key
    _, new_public = generate_keypair()
    save_public_key(new_public, releases.public_key_path)  # today's README: a new release.pub, then a restart

    with running(agent_for(releases)) as agent:
        wait_until(lambda: agent.watcher.last_error is not None, "the agent to say why it does not infer", WAIT_S)
        assert "cannot be verified yet" in agent.watcher.last_error, agent.watcher.last_error
        assert releases.store.refusals(MODEL) == [], "a key the device lacks is no verdict on a release"
        assert agent.watcher.failures == 0
        # The old key back beside the new one (the keyring): the same agent runs 1.0.0 again, no retry by hand.
        ring = releases.root / "keys" / "release.d"
        save_public_key(old_public, ring / key_file_name(old_public))
        wait_until(inferring(agent, "1.0.0"), "1.0.0 running again once its key is in the keyring", WAIT_S)


def test_rotating_through_the_keyring_keeps_the_agent_inferring(releases):
    releases.install("1.0.0")
    old_private = releases.private_key
    new_private, new_public = generate_keypair()
    ring = releases.root / "keys" / "release.d"
    with running(agent_for(releases)) as agent:
        wait_until(inferring(agent, "1.0.0"), "frames on 1.0.0", WAIT_S)
        save_public_key(new_public, ring / key_file_name(new_public))  # 1. add the new key everywhere
    with running(agent_for(releases)) as agent:  # deploy-agent restarts it: the old version keeps running
        wait_until(inferring(agent, "1.0.0"), "1.0.0 still running after the restart", WAIT_S)
        releases.private_key = new_private  # 2. sign with the new key from now on
        releases.install("2.0.0")  # a new version verifies with the new key, and is swapped in hot
        wait_until(inferring(agent, "2.0.0"), "2.0.0 signed by the new key swapped in", WAIT_S)
        assert agent.watcher.failures == 0
    releases.public_key_path.unlink()  # 3. retire the old key (it was the single anchor, release.pub)
    with running(agent_for(releases)) as agent:
        wait_until(inferring(agent, "2.0.0"), "2.0.0 running with the old key retired", WAIT_S)
    releases.private_key = old_private
    with pytest.raises(VerificationError, match="names key"):  # the retired key verifies nothing new (unknown)
        releases.install("3.0.0", activate=False)
    assert releases.store.refusals(MODEL) == []


def test_a_keyring_file_not_named_by_its_key_id_is_not_trusted(releases):
    releases.install("1.0.0")
    planted_private, planted_public = generate_keypair()
    other = generate_keypair()[1]
    ring = releases.root / "keys" / "release.d"
    save_public_key(planted_public, ring / key_file_name(other))  # a key under another key's id
    releases.private_key = planted_private
    with pytest.raises(VerificationError):
        releases.install("2.0.0", activate=False)
