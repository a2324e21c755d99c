"""`doctor`'s check of the trust anchor: the release keyring loads, every file in it is trusted, and none of it
is in the reach of the agent's user."""

from __future__ import annotations

from pathlib import Path

from edgefleet.device.doctor.report import ok
from edgefleet.kernel.errors import EdgefleetError
from edgefleet.kernel.findings import Finding, Status


def check_public_key(path: Path) -> Finding:
    """The release keyring (a key file, the `<name>.d/` keyring beside it, or a keyring directory): it loads,
    every file in it is trusted, and none of it is in the agent user's reach."""
    from edgefleet.kernel.trust.release_keyring import load_keyring

    try:
        ring = load_keyring(path)
    except EdgefleetError as error:
        return Finding(name="public_key", status=Status.FAIL, detail=error.message,
                       fix="install the release public key (deploy-agent does) at this path")
    if ring.problems:
        return Finding(name="public_key", status=Status.FAIL, detail="; ".join(ring.problems),
                       fix="name each key file of the keyring by its key id (edgefleet keys add does), or remove it; "
                           "deploy-agent installs the keyring so")
    from edgefleet.device.trust.anchor import ring_exposure

    try:
        exposed = ring_exposure(path)
    except OSError as error:
        return Finding(name="public_key", status=Status.FAIL, detail=f"{path}: cannot examine the way to it: {error}",
                       fix="make the key and every directory above it readable (and owned by root)")
    if exposed is not None:
        what = "it" if exposed == path else f"the directory {exposed} above it"
        return Finding(name="public_key", status=Status.FAIL,
                       detail=f"the trust anchor {path} is in reach of the agent's user: it can change or rename "
                              f"{what} and plant its own release key",
                       fix=f"re-run deploy-agent (it keeps the key in a root-owned config directory), or: sudo chown "
                           f"root:root {exposed} && sudo chmod go-w {exposed}; the key and every directory above it "
                           "must be root's and not writable by the agent's user")
    return ok("public_key", ring.describe())
