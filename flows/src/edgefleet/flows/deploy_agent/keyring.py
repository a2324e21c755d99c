"""The release keyring as deploy-agent installs it (issue 22: rotating the release key without stopping a device).

`public_key` (DeployAgentParams) names a key file or a keyring directory (`<key id>.pub` files, `edgefleet keys
add`). It is read and checked before any device is touched (a private key, a file that is no key, a misnamed key
file are refused), then written into each device's root-owned `<config_dir>/<id>/keys/release.d/` exactly: keys
no longer in it are removed (how a retired release key leaves the fleet), and so is the single `keys/release.pub`
of older installs.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from edgefleet.flows.deploy_agent.params import RELEASE_KEY_FILE, RELEASE_KEYRING_DIR
from edgefleet.flows.fleet.connection import DeviceShell
from edgefleet.kernel.errors import ConfigError, VerificationError
from edgefleet.kernel.trust.release_keyring import key_file_name, load_keyring
from edgefleet.kernel.trust.signatures import public_key_from_bytes


def release_keyring_files(path_text: str) -> dict[str, str]:
    """The keyring to install on devices, `<key id>.pub` -> content, from a key file or a keyring directory;
    checked before any device is touched: a misnamed, private or unreadable key file in it is refused.

    Raises:
        ConfigError: as `release_public_key_text`, or a keyring directory with a file it would not trust.
    """
    path = Path(os.path.expandvars(path_text)).expanduser()
    if not path.is_dir():
        text = release_public_key_text(path_text)
        return {key_file_name(public_key_from_bytes(text.encode(), source=str(path))): text}
    try:
        ring = load_keyring(path)
    except VerificationError as error:
        raise ConfigError(error.message, error.fix) from error
    if ring.problems:
        raise ConfigError(f"keyring {path}: {'; '.join(ring.problems)}",
                          "fix the keyring first (edgefleet keys list / add): devices would not trust that file")
    return {key_file_name(key): release_public_key_text(str(path / key_file_name(key))) for _, key in ring.keys}


def install_keyring(connection: DeviceShell, config_dir: str, files: dict[str, str]) -> str:
    """Writes the keyring into the device's root-owned `keys/release.d/` (new keys first, then the keys no longer
    in it are removed, and the single `release.pub` of older installs last); returns the keyring's path."""
    q = shlex.quote
    ring = f"{config_dir}/{RELEASE_KEYRING_DIR}"
    connection.run(f"mkdir -p {q(ring)} && chown root:root {q(ring)} && chmod 755 {q(ring)}")
    for name, text in files.items():
        connection.write_text(f"{ring}/{name}", text)
    keep = " ".join(f"! -name {q(name)}" for name in files)
    connection.run(f"find {q(ring)} -mindepth 1 -maxdepth 1 {keep} -exec rm -rf {{}} + && "
                   f"rm -f {q(config_dir + '/' + RELEASE_KEY_FILE)}")
    return ring


def release_public_key_text(path_text: str) -> str:
    """The release public key file's content, checked before any device is touched (finding 7): `~` expanded,
    parsed as an Ed25519 public key; a private key given by mistake is refused (never copied to devices).

    Raises:
        ConfigError: missing, unreadable, a private key, or not an Ed25519 public key.
    """
    path = Path(os.path.expandvars(path_text)).expanduser()
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"release public key file {path} cannot be read ({error.strerror})",
                          "give the path of the release public key (e.g. ~/.edgefleet/keys/"
                          "release-signing.key.pub)") from error
    if b"PRIVATE KEY" in data:
        raise ConfigError(f"{path} holds a PRIVATE key: it must never be copied to devices",
                          "give the public key file (the .pub beside the signing key)")
    try:
        public_key_from_bytes(data, source=str(path))
    except VerificationError as error:
        raise ConfigError(error.message, error.fix) from error
    return data.decode()
