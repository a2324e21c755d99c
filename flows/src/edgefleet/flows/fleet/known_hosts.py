"""Reading a known_hosts file the way OpenSSH does, with clear errors where paramiko would raise a traceback.

paramiko's own reader raises `InvalidHostKey` (a traceback) on OpenSSH's marker lines. Here:
- `@revoked <hosts> <type> <key>`: the key is refused, for every host (OpenSSH refuses a revoked key even
  where another line lists it as known); the connection fails with a `HostKeyError` that says so;
- `@cert-authority ...`: host certificates are not supported: a `ConfigError` naming the file and line;
- a line paramiko cannot parse: a `ConfigError` naming the file and line, never a traceback.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from pathlib import Path

from paramiko.hostkeys import HostKeyEntry, HostKeys, InvalidHostKey
from paramiko.pkey import PKey
from paramiko.ssh_exception import SSHException

from edgefleet.kernel.errors import ConfigError

REVOKED_MARKER = "@revoked"
CERT_AUTHORITY_MARKER = "@cert-authority"


@dataclass(frozen=True)
class KnownHosts:
    """The accepted host key entries (revoked keys removed) and the revoked keys as (type, base64) pairs."""

    entries: tuple[HostKeyEntry, ...]
    revoked: frozenset[tuple[str, str]]

    def add_to(self, host_keys: HostKeys) -> None:
        """Adds the accepted keys to `host_keys` (a paramiko client's)."""
        for entry in self.entries:
            for name in entry.hostnames:
                host_keys.add(name, entry.key.get_name(), entry.key)

    def is_revoked(self, key: PKey) -> bool:
        return (key.get_name(), key.get_base64()) in self.revoked


def _revoked_key(line: str, where: str) -> tuple[str, str]:
    fields = line.split()
    if len(fields) < 4:
        raise ConfigError(f"{where}: a @revoked line needs hosts, key type and key: {line!r}",
                          "write it as: @revoked * ssh-ed25519 AAAA... (the key as ssh-keyscan prints it)")
    key_type, key_text = fields[2], fields[3]
    try:
        base64.b64decode(key_text, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where}: the revoked key is not base64: {key_text[:40]!r}",
                          "copy the key as ssh-keyscan prints it") from None
    return key_type, key_text


def _entry(line: str, where: str) -> HostKeyEntry | None:
    """The entry of `line`; None for a key type paramiko does not know (that host stays unknown: refused)."""
    if len(line.split()) < 3:
        raise ConfigError(f"{where}: a known_hosts line needs hosts, key type and key: {line[:80]!r}",
                          "fix or remove the line (ssh-keyscan HOST prints valid lines)")
    try:
        return HostKeyEntry.from_line(line)
    except (InvalidHostKey, SSHException, ValueError, binascii.Error) as error:
        raise ConfigError(f"{where}: not a known_hosts line ({type(error).__name__}): {line[:80]!r}",
                          "fix or remove the line (ssh-keyscan HOST prints valid lines)") from None


def parse_known_hosts(text: str, source: str) -> KnownHosts:
    """The known host keys and revoked keys in `text` (`source` names the file in errors).

    Raises:
        ConfigError: a @cert-authority line (unsupported) or a malformed line, naming file and line.
    """
    revoked: set[tuple[str, str]] = set()
    entries: list[HostKeyEntry] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        where = f"{source} line {number}"
        if not line or line.startswith("#"):
            continue
        if line.startswith(CERT_AUTHORITY_MARKER):
            raise ConfigError(f"{where}: @cert-authority (SSH host certificates) is not supported",
                              "list each device's host key instead (ssh-keyscan, checked out of band)")
        if line.startswith(REVOKED_MARKER):
            revoked.add(_revoked_key(line, where))
            continue
        if line.startswith("@"):
            raise ConfigError(f"{where}: unknown marker {line.split()[0]!r}",
                              "known_hosts supports @revoked; remove the line")
        entry = _entry(line, where)
        if entry is not None:
            entries.append(entry)
    # a revoked key is never accepted, whichever line also lists it
    accepted = tuple(entry for entry in entries if (entry.key.get_name(), entry.key.get_base64()) not in revoked)
    return KnownHosts(accepted, frozenset(revoked))


def load_known_hosts(path: Path) -> KnownHosts:
    """`parse_known_hosts` of the file at `path`.

    Raises:
        ConfigError: unreadable, or a line `parse_known_hosts` refuses.
    """
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"known_hosts file {path} cannot be read: {error}",
                          "give a readable known_hosts file (one line per host key)") from None
    return parse_known_hosts(text, str(path))
