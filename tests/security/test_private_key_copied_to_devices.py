"""Finding 7: `deploy-agent` read `public_key` without `~` expansion, never parsed it, and only after the pip
install; a private key given by mistake would have been copied to every device. The key is now read,
parsed and checked before any device is touched; a private key is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet.flows.deploy_agent.flow import DeployAgentParams, deploy_agent, release_public_key_text
from edgefleet.kernel.errors import ConfigError
from edgefleet.kernel.trust.signatures import generate_keypair, save_private_key, save_public_key


def params(public_key: Path | str, tmp_path: Path) -> DeployAgentParams:
    # an inventory that does not exist: any attempt to reach a device would fail on it instead
    return DeployAgentParams(inventory=str(tmp_path / "no-fleet.yaml"), public_key=str(public_key), agent={})


def test_a_private_key_given_as_the_public_key_is_refused_before_any_device(tmp_path: Path) -> None:
    private, _ = generate_keypair()
    path = save_private_key(private, tmp_path / "release.key")
    with pytest.raises(ConfigError, match="PRIVATE key"):
        deploy_agent.fn(params(path, tmp_path))


def test_a_file_that_is_no_key_is_refused_before_any_device(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")
    with pytest.raises(ConfigError, match="not an Ed25519 public key"):
        deploy_agent.fn(params(path, tmp_path))


def test_the_public_key_path_expands_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    _, public = generate_keypair()
    save_public_key(public, tmp_path / "keys" / "release.pub")
    assert "BEGIN PUBLIC KEY" in release_public_key_text("~/keys/release.pub")


def test_a_private_key_inside_a_keyring_directory_is_refused_before_any_device(tmp_path: Path) -> None:
    """The keyring (issue 22): `public_key` may name a directory of `<key id>.pub` files; a private key there,
    under any name, is refused as well, and nothing is copied."""
    from edgefleet.kernel.trust.release_keyring import key_file_name

    private, public = generate_keypair()
    ring = tmp_path / "release.d"
    save_public_key(public, ring / key_file_name(public))
    save_private_key(private, ring / key_file_name(generate_keypair()[1]))
    with pytest.raises(ConfigError, match="not an Ed25519 public key"):
        deploy_agent.fn(params(ring, tmp_path))
