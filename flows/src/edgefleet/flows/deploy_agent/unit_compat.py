"""The agent's systemd unit, fitted to the systemd a device runs (issue 22, item 7).

systemd ignores a directive it does not know with a warning ("Unknown key name 'PrivateIPC'"), and
`systemd-analyze verify` reports it, so deploy-agent refused Debian 11 / Raspberry Pi OS Bullseye (systemd
247) outright. Each directive newer than the oldest supported systemd has its first version in
`DIRECTIVE_SINCE` (data, from systemd's NEWS and the `Added in version` notes of systemd.exec(5)); the unit is
rendered for the device's version (`systemctl --version`, read over the connection) with the directives that
version knows. Everything the template uses that is not in the table is in systemd 241 (Debian 10) already.

The hardening such a device goes without is reported (`FittedUnit.omitted`) and logged by deploy-agent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import MappingProxyType

from edgefleet.kernel.errors import ConfigError

OLDEST_SYSTEMD = 241
"""Debian 10 (buster): the oldest systemd the unit is rendered for."""

DIRECTIVE_SINCE = MappingProxyType({
    "ProtectHostname": 242,
    "RestrictSUIDSGID": 242,
    "ProtectKernelLogs": 244,
    "ProtectClock": 245,
    "ProtectProc": 247,
    "ProcSubset": 247,
    "PrivateIPC": 248,
})
"""Directive -> the first systemd version that knows it (only those newer than OLDEST_SYSTEMD)."""

_VERSION = re.compile(r"^systemd (\d+)\b", re.MULTILINE)
_DIRECTIVE = re.compile(r"^([A-Za-z]+)=")


@dataclass(frozen=True)
class FittedUnit:
    """A unit rendered for one systemd version, and the directives left out because that version lacks them."""

    text: str
    systemd_version: int | None
    omitted: tuple[str, ...] = ()


def parse_systemd_version(output: str) -> int:
    """The major version in `systemctl --version`'s output ("systemd 247 (247.3-7+deb11u5)" -> 247).

    Raises:
        ConfigError: not the output of `systemctl --version`.
    """
    found = _VERSION.search(output)
    if found is None:
        raise ConfigError(f"cannot read the systemd version from {output.strip()[:200]!r}",
                          "check `systemctl --version` on the device, or use service: {manager: process}")
    return int(found.group(1))


def fit_unit(text: str, version: int | None) -> FittedUnit:
    """`text` with the directives `version` does not know left out; unchanged for None (version unknown: the
    unit as written, for the newest systemd).

    Raises:
        ConfigError: `version` is older than OLDEST_SYSTEMD.
    """
    if version is None:
        return FittedUnit(text, None)
    if version < OLDEST_SYSTEMD:
        raise ConfigError(f"the device runs systemd {version}; the agent's unit needs systemd {OLDEST_SYSTEMD} or "
                          "newer (Debian 10 / Raspberry Pi OS Buster)",
                          "upgrade the device's OS, or run the agent with service: {manager: process}")
    kept, omitted = [], []
    for line in text.splitlines(keepends=True):
        found = _DIRECTIVE.match(line)
        if found and DIRECTIVE_SINCE.get(found.group(1), 0) > version:
            omitted.append(found.group(1))
        else:
            kept.append(line)
    return FittedUnit("".join(kept), version, tuple(omitted))
