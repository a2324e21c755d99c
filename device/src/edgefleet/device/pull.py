"""Pull mode: follow a registry channel, and download, verify, install and activate what it names.

`pull_channel_once` does one round (`edgefleet.device.poller.ChannelPoller` runs it on a thread): read the pointer
and judge it (`edgefleet.device.trust.pointers`: signature, counter, validity, expiry, the device's version floor); then
`edgefleet.device.pull_plan.plan_round` decides: nothing to do (it names the current version), skip a version
refused before (unless `retry_refused`), wait for the maintenance window, or read the manifest from the registry,
check its sha256 against the pointer and its signature, download into a staging directory inside the store,
verify every file, install and activate; then the shadow candidate (`edgefleet.device.pull_shadow`). A
version that fails verification (tampered or damaged registry object, wrong key, a manifest that is not the
one the channel names) is refused: nothing is activated, the store is unchanged, and the refusal is recorded
in the store (`ModelStore.mark_refused`) so it is not downloaded again at every poll. The running agent uses
the same record for a version that fails its smoke test, so pull mode does not re-activate it.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import NamedTuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edgefleet.device.floor import VersionFloor, highest
from edgefleet.device.pull_fetch import download_and_install
from edgefleet.device.pull_plan import Installed, Outcome, PullStep, StoreState, plan_round, pointer_outcome
from edgefleet.device.pull_shadow import ShadowInputs, ShadowResult, follow_shadow
from edgefleet.device.registry.base import RegistryReader
from edgefleet.device.store import ModelStore
from edgefleet.device.trust.pointers import (
    RECORD_FILE,
    ChannelRecord,
    accepted,
    assess_pointer,
    parse_record,
    record_bytes,
    version_identity,
)
from edgefleet.device.trust.version_bundle import (
    PublicKeyLike,
    SignedManifest,
    check_manifest_signatures,
    read_signed_manifest,
)
from edgefleet.device.window import MaintenanceWindow
from edgefleet.kernel.contracts.manifest import ChannelPointer
from edgefleet.kernel.errors import RegistryError, VerificationError
from edgefleet.kernel.trust.release_keyring import Keyring, UnknownKeyError, resolve_keyring
from edgefleet.kernel.trust.signatures import KeyedSignature, encode_signature, encode_signatures

log = logging.getLogger(__name__)

__all__ = ["Outcome", "PullResult", "pull_channel_once"]


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
    shadow: ShadowResult | None = None
    """What the round did about the shadow candidate (`pull_shadow`); None when it did not look."""

    @property
    def refused(self) -> bool:
        """True when this round refused the version (not for one refused earlier)."""
        return self.outcome == "refused"

    @property
    def pointer_problem(self) -> bool:
        """True when the channel pointer was refused or expired (the device stays where it is)."""
        return self.outcome in ("pointer_refused", "expired", "unknown_key")


def pull_channel_once(
    registry: RegistryReader,
    store: ModelStore,
    model: str,
    channel: str,
    public_key: PublicKeyLike | None = None,
    *,
    retry_refused: bool = False,
    require_signed: bool = True,
    now: datetime | None = None,
    device_id: str | None = None,
    window: MaintenanceWindow | None = None,
    shadow: bool = False,
) -> PullResult:
    """Brings the store's current version of `model` to what `channel` names, if it verifies (the round's steps
    are in the module doc).

    Args:
        registry: where the channel lives.
        store: the device's model store.
        model, channel: what to follow.
        public_key: the release public key; default the store's (`<root>/keys/release.pub`).
        retry_refused: try a previously refused version again.
        require_signed: refuse unsigned (schema 1) pointers (the default; False is the transition setting
            for fleets whose pipelines do not sign yet).
        now: the time to judge expiry by (default: the clock).
        device_id: this device's id (a staged rollout's pointer names a version per side of its share,
            `edgefleet.device.staged`; without an id such a pointer is refused).
        window: the device's maintenance window (`edgefleet.device.window`): outside it, a version to download
            or activate waits (outcome `deferred`; nothing is downloaded, changed or recorded). None: any time.
        shadow: this agent runs shadow candidates (`shadow.share` above 0): a staged rollout's shadow share
            that includes this device has its candidate downloaded, verified and named as the shadow, never
            activated (`edgefleet.device.pull_shadow`; `PullResult.shadow` says what happened).

    Returns:
        The result; `outcome == "refused"` when verification failed (the store is then unchanged).

    Raises:
        RegistryError: the registry cannot be read (transient: try again later).
        StoreError: the store cannot be changed right now (e.g. another writer holds its lock), or its
            floor record is damaged.
        VerificationError: the channel record is damaged.
    """
    # A missing or unreadable key is this device's setup problem, not the release's: it raises here,
    # before anything could be recorded as refused.
    key = resolve_keyring(public_key if public_key is not None else store.public_key)  # read once per round
    pointer = registry.read_channel(model, channel).pointer
    running = _running(store, model)
    before = running.version if running else None
    if pointer is None:
        return PullResult(False, None, f"channel {channel} of model {model} is not set in {registry.uri}",
                          "no_channel", before)
    seen = _Seen(pointer, running, parse_record(store.read_model_file(model, RECORD_FILE),
                 source=f"{store.root} {model} {RECORD_FILE}"), store.floor(model), now or datetime.now(timezone.utc))
    judgement = assess_pointer(
        key, pointer, seen.record, floor=seen.floor, now=seen.now, source=f"{registry.uri} {model}/{channel}",
        require_signed=require_signed, running=version_identity(*running) if running else None, device_id=device_id,
    )
    outcome = pointer_outcome(judgement)
    if outcome is not None or judgement.target is None:
        outcome = outcome or "pointer_refused"
        log.warning("%s %s/%s from %s: %s", outcome.replace("_", " "), model, channel, registry.uri, judgement.reason)
        return PullResult(False, pointer.version, judgement.reason, outcome, before)
    result = _pull_target(registry, store, _Moving(pointer, judgement.target), key, seen,
                          retry_refused=retry_refused, window=window)
    inputs = ShadowInputs(device_id, seen.lowest, shadow, retry_refused, window, seen.now)
    return result._replace(shadow=follow_shadow(registry, store, pointer, key, inputs))


class _Moving(NamedTuple):
    """The pointer as signed (its counter is remembered) and as it applies to this device (what moves)."""

    signed: ChannelPointer
    target: ChannelPointer


class _Seen(NamedTuple):
    """What a round read before judging the pointer: the pointer as signed, the store's current version, the
    channel record, the floor, and the time the round judges by."""

    pointer: ChannelPointer
    running: Installed | None
    record: ChannelRecord
    floor: VersionFloor | None
    now: datetime

    @property
    def before(self) -> str | None:
        return self.running.version if self.running else None

    @property
    def lowest(self) -> str | None:
        """The device's floor: the store's floor record and the channel record together."""
        return highest(self.floor.version if self.floor else None, self.record.highest_version)


def _running(store: ModelStore, model: str) -> Installed | None:
    current = store.current(model)
    return Installed(current.version, current.manifest_sha256) if current is not None else None


def _pull_target(
    registry: RegistryReader, store: ModelStore, moving: _Moving, key: Keyring, seen: _Seen, *,
    retry_refused: bool, window: MaintenanceWindow | None,
) -> PullResult:
    """The round for the accepted pointer's version: read what the store holds of it, plan, carry it out."""
    pointer = moving.target
    try:
        installed = store.installed(pointer.model, pointer.version)
    except VerificationError as error:  # the installed copy is damaged: refused, as a failed download is
        return _refuse(registry, store, pointer, _reason(error), seen.before)
    refusal = store.refusal(pointer.model, pointer.version, pointer.manifest_sha256)
    held = StoreState(current=seen.running,
                      installed=Installed(installed.version, installed.manifest_sha256) if installed else None,
                      floor=seen.lowest, refusal=refusal, retry_refused=retry_refused)
    step = plan_round(pointer, held, window=window, now=seen.now)
    return _carry_out(step, registry, store, moving, key, seen, refused_before=refusal is not None)


def _carry_out(
    step: PullStep, registry: RegistryReader, store: ModelStore, moving: _Moving, key: Keyring, seen: _Seen, *,
    refused_before: bool,
) -> PullResult:
    """The I/O of one step (`plan_round` decided it)."""
    pointer, before = moving.target, seen.before
    if step.action in ("keep", "lower_floor"):
        _refresh_signatures(registry, store, pointer, key)
        if step.action == "lower_floor":
            store.activate(pointer.model, pointer.version, key, signed_downgrade=True)
        _remember(store, pointer.model, seen.record, moving)
        return PullResult(False, pointer.version, step.reason, "unchanged", before)
    if step.action == "defer":
        return PullResult(False, pointer.version, step.reason, "deferred", before)
    if step.action == "skip":
        return PullResult(False, pointer.version, step.reason, "previously_refused", before)
    if step.action == "refuse":
        return _refuse(registry, store, pointer, step.reason, before)
    return _install(step, registry, store, moving, key, seen, refused_before=refused_before)


def _install(
    step: PullStep, registry: RegistryReader, store: ModelStore, moving: _Moving, key: Keyring, seen: _Seen, *,
    refused_before: bool,
) -> PullResult:
    """`activate` (installed already) or `download` (fetch, verify, install), then make it current."""
    pointer, before = moving.target, seen.before
    model, version = pointer.model, pointer.version
    if step.action == "activate":  # installed before the key was rotated: may need the new signatures
        _refresh_signatures(registry, store, pointer, key)
    try:
        if step.action == "download":
            download_and_install(registry, store, pointer, key)
        store.activate(model, version, key, signed_downgrade=pointer.signed and pointer.downgrade)
    except UnknownKeyError as error:  # this device lacks the key (yet): tried again next round, never refused
        log.warning("not activating %s %s from %s: %s", model, version, registry.uri, error.message)
        return PullResult(False, version, _reason(error), "unknown_key", before)
    except VerificationError as error:
        return _refuse(registry, store, pointer, _reason(error), before)
    _remember(store, model, seen.record, moving)
    if refused_before:  # retried on request, and it verified this time: forget the refusal
        store.clear_refused(model)
    log.info("pulled %s %s from %s channel %s (was %s)", model, version, registry.uri, pointer.channel, before)
    return PullResult(True, version, f"activated {model} {version} from channel {pointer.channel} (was "
                      f"{before or 'none'})", "activated", before)


def _refresh_signatures(registry: RegistryReader, store: ModelStore, pointer: ChannelPointer, key: Keyring) -> None:
    """After the release key was rotated: a pointer signed by a key whose signature the installed copy's
    `manifest.sig` lacks brings the registry's signatures (the same manifest, re-signed by `edgefleet keys
    resign`), so the version still verifies here once the old key is retired. Checked locally first (one
    signature check), so the registry is read only right after a rotation. Anything wrong is logged, left as is."""
    signer = key.find(pointer.key_id) if pointer.signed and pointer.key_id is not None else None
    if signer is None:
        return
    path = store.version_dir(pointer.model, pointer.version)
    try:
        local = read_signed_manifest(path)
        if local.manifest_sha256 != pointer.manifest_sha256 or _signed_by(local, signer):
            return
        signed = registry.read_manifest(pointer.model, pointer.version)
        if signed.manifest_sha256 != pointer.manifest_sha256 or not isinstance(signed.signature, tuple):
            return
        if store.adopt_signatures(pointer.model, pointer.version, _signature_text(signed.signature), key):
            log.info("%s %s: took the registry's signatures (key %s)", pointer.model, pointer.version, pointer.key_id)
    except (VerificationError, RegistryError, OSError) as error:
        log.warning("could not refresh the signatures of %s %s: %s", pointer.model, pointer.version, error)


def _signed_by(local: SignedManifest, signer: Ed25519PublicKey) -> bool:
    try:
        check_manifest_signatures(local.raw, local.signature, signer, what="installed manifest")
    except VerificationError:
        return False
    return True


def _signature_text(signatures: tuple[KeyedSignature, ...]) -> bytes:
    if len(signatures) == 1 and signatures[0].key_id is None:
        return encode_signature(signatures[0].signature)
    return encode_signatures(signatures)


def _reason(error: VerificationError) -> str:
    return error.message + (f" (fix: {error.fix})" if error.fix else "")


def _refuse(registry: RegistryReader, store: ModelStore, pointer: ChannelPointer, reason: str,
            before: str | None) -> PullResult:
    store.mark_refused(pointer.model, pointer.version, pointer.manifest_sha256, reason)
    log.warning("refused %s %s from %s channel %s: %s", pointer.model, pointer.version, registry.uri,
                pointer.channel, reason)
    return PullResult(False, pointer.version, reason, "refused", before)


def _remember(store: ModelStore, model: str, record: ChannelRecord, moving: _Moving) -> None:
    updated = accepted(record, moving.signed, moving.target)
    if updated != record:
        store.write_model_file(model, RECORD_FILE, record_bytes(updated))
