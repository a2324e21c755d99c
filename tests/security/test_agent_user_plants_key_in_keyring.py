"""Issue 22 item 2, beside the keyring: the keyring directory is a trust anchor too.

A key planted in `keys/release.d/` is trusted like the release key, so whoever can write that directory, or any
key file in it, or any directory above it, is a release signer. doctor's check (`ring_writable_component`, as
`writable_component` does for the single `release.pub`) and the device CLI's check against other users
(`ring_foreign_writable`) cover the directory and each file in it, not only the path the config names.

Built on the real file system with a stand-in uid (chown works as root; CI runs as root).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgefleet.device.trust.anchor import ring_foreign_writable, ring_writable_component
from edgefleet.flows.trust.key_rotation import add_key
from tests.device.store_fixtures import Keys

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds files owned by another uid: needs root (CI)")

AGENT_UID, AGENT_GID = 64123, 64123


def _layout(tmp_path: Path, keys: Keys) -> tuple[Path, Path, Path]:
    """Root's config dir with the single anchor and the keyring beside it; returns (anchor, ring, key file)."""
    tmp_path.chmod(0o755)
    config = tmp_path / "etc" / "keys"
    config.mkdir(parents=True)
    anchor = config / "release.pub"
    anchor.write_bytes(keys.public_file.read_bytes())
    key_file = add_key(config / "release.d", keys.public_file)
    return anchor, config / "release.d", key_file


@pytest.mark.parametrize("how", ["agent-owned keyring dir", "group-writable keyring dir", "other-writable key file",
                                 "agent-owned key file"])
def test_every_way_into_the_keyring_is_found(tmp_path, keys, how):
    anchor, ring, key_file = _layout(tmp_path, keys)
    assert ring_writable_component(anchor, AGENT_UID, {AGENT_GID}) is None  # as deploy-agent leaves it
    if how == "agent-owned keyring dir":
        os.chown(ring, AGENT_UID, AGENT_GID)
        expected = ring
    elif how == "group-writable keyring dir":
        os.chown(ring, 0, AGENT_GID)
        ring.chmod(0o775)
        expected = ring
    elif how == "other-writable key file":
        key_file.chmod(0o666)
        expected = key_file
    else:
        os.chown(key_file, AGENT_UID, AGENT_GID)
        expected = key_file
    # Named by the single anchor's path (older configs) or by the keyring directory (deploy-agent's): found.
    assert ring_writable_component(anchor, AGENT_UID, {AGENT_GID}) == expected
    assert ring_writable_component(ring, AGENT_UID, {AGENT_GID}) == expected
    assert ring_foreign_writable(ring, 0, {0}) is not None  # the store commands, run as root, refuse it too
