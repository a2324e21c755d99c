"""Pull mode: follow a registry channel, and download, verify, install and activate what it names.

`pull_channel_once` does one round (`edgefleet.device.poller.ChannelPoller` runs it on a thread). A
version that fails verification (tampered or damaged registry object, wrong key, a manifest that is not the
one the channel names) is refused: nothing is activated, the store is unchanged, and the refusal is recorded
in the store (`ModelStore.mark_refused`) so it is not downloaded again at every poll. The running agent uses
the same record for a version that fails its smoke test, so pull mode does not re-activate it.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Literal, NamedTuple

from edgefleet.device.bundle import sha256_file, verify_manifest_bytes
from edgefleet.device.channel import (
    RECORD_FILE,
    ChannelRecord,
    accepted,
    judge_pointer,
    parse_record,
    record_bytes,
    verify_pointer,
)
from edgefleet.device.registry.base import RegistryReader
from edgefleet.device.store import ModelStore
from edgefleet.kernel.contracts.layout import MANIFEST_FILE
from edgefleet.kernel.contracts.manifest import ChannelPointer
from edgefleet.kernel.errors import VerificationError
from edgefleet.kernel.signing import PublicKeyLike, resolve_public_key

log = logging.getLogger(__name__)

Outcome = Literal[
    "activated", "unchanged", "no_channel", "refused", "previously_refused", "pointer_refused", "expired"
]
"""`pointer_refused`: the channel pointer itself was refused (bad signature, replayed, a lower version that
is not a signed downgrade, unsigned after signed); `expired`: the signed pointer expired. Both keep the
device on what it runs and record nothing as refused (a newer valid pointer is taken at the next poll)."""
class PullResult(NamedTuple):
    """What one pull round did."""

    changed: bool
    """True when a new version was activated."""
    version: str | None
    """The version the channel names (None when the channel is not set)."""
    reason: str
    """Human-readable: what happened, or why the version was refused."""
    outcome: Outcome = "unchanged"
    previous: str | None = None
    """The version that was current before this round."""

    @property
    def refused(self) -> bool:
        """True when this round refused the version (not for one refused earlier)."""
        return self.outcome == "refused"

    @property
    def pointer_problem(self) -> bool:
        """True when the channel pointer was refused or expired (the device stays where it is)."""
        return self.outcome in ("pointer_refused", "expired")


def pull_channel_once(
    registry: RegistryReader,
    store: ModelStore,
    model: str,
    channel: str,
    public_key: PublicKeyLike | None = None,
    *,
    retry_refused: bool = False,
    require_signed: bool = False,
    now: datetime | None = None,
) -> PullResult:
    """Brings the store's current version of `model` to what `channel` names, if it verifies.

    Steps: read the pointer and judge it (`edgefleet.device.channel`: signature, counter, expiry, version
    floor); if it names the current version, nothing to do; if that version (with that
    manifest sha256) was refused before, skip it (unless `retry_refused`); else read the manifest from the
    registry, check its sha256 against the pointer and its signature, download into a staging directory
    inside the store, verify every file, install and activate.

    Args:
        registry: where the channel lives.
        store: the device's model store.
        model, channel: what to follow.
        public_key: the release public key; default the store's (`<root>/keys/release.pub`).
        retry_refused: try a previously refused version again.
        require_signed: refuse unsigned (schema 1) pointers even before a signed one was seen.
        now: the time to judge expiry by (default: the clock).

    Returns:
        The result; `outcome == "refused"` when verification failed (the store is then unchanged).

    Raises:
        RegistryError: the registry cannot be read (transient: try again later).
        StoreError: the store cannot be changed right now (e.g. another writer holds its lock).
    """
    # A missing or unreadable key is this device's setup problem, not the release's: it raises here,
    # before anything could be recorded as refused.
    key = public_key if public_key is not None else store.public_key
    resolve_public_key(key)
    pointer = registry.read_channel(model, channel).pointer
    current = store.current(model)
    current_version = current.version if current else None
    if pointer is None:
        return PullResult(
            False,
            None,
            f"channel {channel} of model {model} is not set in {registry.uri}",
            "no_channel",
            current_version,
        )
    version = pointer.version
    record = parse_record(store.read_model_file(model, RECORD_FILE), source=f"{store.root} {model} {RECORD_FILE}")
    problem = _pointer_problem(pointer, record, key, registry, require_signed, now or datetime.now(timezone.utc))
    if problem is not None:
        outcome, reason = problem
        log.warning("%s %s/%s from %s: %s", outcome.replace("_", " "), model, channel, registry.uri, reason)
        return PullResult(False, version, reason, outcome, current_version)
    if (
        current is not None
        and current.version == version
        and current.manifest_sha256 == pointer.manifest_sha256
    ):
        _remember(store, model, record, pointer)
        return PullResult(
            False, version, f"{model} {version} is already current", "unchanged", current_version
        )
    refusal = store.refusal(model, version, pointer.manifest_sha256)
    if refusal is not None and not retry_refused:
        return PullResult(
            False,
            version,
            f"{model} {version} was refused earlier: {refusal.reason}",
            "previously_refused",
            current_version,
        )

    def refuse(reason: str) -> PullResult:
        store.mark_refused(model, version, pointer.manifest_sha256, reason)
        log.warning("refused %s %s from %s channel %s: %s", model, version, registry.uri, channel, reason)
        return PullResult(False, version, reason, "refused", current_version)

    try:
        installed = store.installed(model, version)
        if installed is not None and installed.manifest_sha256 != pointer.manifest_sha256:
            return refuse(
                f"the installed {model} {version} has manifest sha256 {installed.manifest_sha256[:16]}..., "
                f"channel {channel} names {pointer.manifest_sha256[:16]}...: versions are immutable, so "
                "one of them was altered"
            )
        if installed is None:
            signed = registry.read_manifest(model, version)
            if signed.manifest_sha256 != pointer.manifest_sha256:
                return refuse(
                    f"the manifest of {model} {version} in {registry.uri} has sha256 "
                    f"{signed.manifest_sha256[:16]}..., channel {channel} names "
                    f"{pointer.manifest_sha256[:16]}...: the manifest was replaced after promotion"
                )
            verify_manifest_bytes(
                signed.raw, signed.signature, key, source=f"{registry.uri} {model} {version} {MANIFEST_FILE}"
            )
            with store.staging_dir() as staging:
                download_dir = staging / version
                registry.download_version(model, version, download_dir)
                downloaded_sha = sha256_file(download_dir / MANIFEST_FILE)
                if downloaded_sha != pointer.manifest_sha256:
                    return refuse(
                        f"the downloaded manifest of {model} {version} has sha256 {downloaded_sha[:16]}..., "
                        f"channel {channel} names {pointer.manifest_sha256[:16]}..."
                    )
                store.install(download_dir, key)
        store.activate(model, version, key)
        _remember(store, model, record, pointer)
        if refusal is not None:  # retried on request and it verified this time: forget the refusal
            store.clear_refused(model)
    except VerificationError as error:
        return refuse(f"{error.message}" + (f" (fix: {error.fix})" if error.fix else ""))
    log.info(
        "pulled %s %s from %s channel %s (was %s)", model, version, registry.uri, channel, current_version
    )
    return PullResult(
        True,
        version,
        f"activated {model} {version} from channel {channel} (was {current_version or 'none'})",
        "activated",
        current_version,
    )


def _pointer_problem(
    pointer: ChannelPointer,
    record: ChannelRecord,
    key: PublicKeyLike,
    registry: RegistryReader,
    require_signed: bool,
    now: datetime,
) -> tuple[Outcome, str] | None:
    """("pointer_refused" | "expired", reason) when the pointer must not be followed, else None."""
    if pointer.signed:
        try:
            verify_pointer(key, pointer, source=f"{registry.uri} {pointer.model}/{pointer.channel}")
        except VerificationError as error:
            return "pointer_refused", error.message
    judgement = judge_pointer(pointer, record, now=now, require_signed=require_signed)
    if judgement.verdict == "refuse":
        return "pointer_refused", judgement.reason
    if judgement.verdict == "expired":
        return "expired", judgement.reason
    return None


def _remember(store: ModelStore, model: str, record: ChannelRecord, pointer: ChannelPointer) -> None:
    updated = accepted(record, pointer)
    if updated != record:
        store.write_model_file(model, RECORD_FILE, record_bytes(updated))
