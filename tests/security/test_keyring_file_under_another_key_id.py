"""Issue 22 item 2, beside the keyring: a key file whose name is not its key's id.

Retiring a key removes the file of that id (`edgefleet keys retire`, deploy-agent installing the keyring). A key
kept under another key's id would outlive its retirement, and a listing by file name would show a key the ring
does not hold. Such a file is not trusted anywhere: the device's keyring skips it (and says so), doctor fails,
deploy-agent refuses to install a keyring holding one, `keys add` names every file by its key id.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet.device.doctor import check_public_key
from edgefleet.device.trust.version_bundle import verify_version_dir
from edgefleet.flows.deploy_agent.keyring import release_keyring_files
from edgefleet.flows.trust.key_rotation import add_key, describe_ring_files
from edgefleet.kernel.errors import ConfigError, VerificationError
from edgefleet.kernel.trust.release_keyring import key_file_name, load_keyring
from edgefleet.kernel.trust.signatures import generate_keypair, save_public_key
from tests.device.store_fixtures import Keys, VersionFactory


@pytest.fixture
def ring(tmp_path: Path, keys: Keys) -> Path:
    directory = tmp_path / "ring"
    add_key(directory, keys.public_file)
    return directory


def plant(ring: Path, tmp_path: Path) -> Keys:
    """A second key saved under a made-up key id (as a hand copy or an attacker would name it)."""
    planted = Keys(tmp_path / "planted")
    save_public_key(planted.public, ring / key_file_name(generate_keypair()[1]))
    return planted


def test_a_misnamed_key_is_not_trusted_and_named(ring, tmp_path, keys, make_version: VersionFactory):
    planted = plant(ring, tmp_path)
    keyring = load_keyring(ring)
    assert keyring.find(key_file_name(planted.public)[:16]) is None and keyring.find(key_file_name(keys.public)[:16])
    assert len(keyring.problems) == 1 and "not the key its name says" in keyring.problems[0]
    with pytest.raises(VerificationError):  # what the planted key signs verifies nowhere
        verify_version_dir(make_version("birds", "6.6.6", private_key=planted.private), ring)
    assert verify_version_dir(make_version("birds", "1.0.0"), ring).version == "1.0.0"  # the rest still works


def test_doctor_and_deploy_agent_refuse_the_keyring(ring, tmp_path):
    plant(ring, tmp_path)
    check = check_public_key(ring)
    assert check.status == "fail" and "not the key its name says" in check.detail
    with pytest.raises(ConfigError, match="not the key its name says"):
        release_keyring_files(str(ring))  # before any device is touched
    rows = dict(describe_ring_files(ring))
    assert sum("MISNAMED" in detail for detail in rows.values()) == 1


def test_keys_add_names_the_file_by_its_key_id_and_refuses_a_private_key(tmp_path, keys):
    ring = tmp_path / "ring"
    assert add_key(ring, keys.public_file).name == key_file_name(keys.public)
    with pytest.raises(ConfigError, match="PRIVATE"):
        add_key(ring, keys.private_file)
    assert [p.name for p in ring.iterdir()] == [key_file_name(keys.public)]
