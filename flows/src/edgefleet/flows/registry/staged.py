"""Signing a staged rollout into a channel (schema 3 pointer): the pull rollout's one write to the registry.

`stage_rollout` writes a pointer naming `version` for `share_bp` of the fleet and the version it replaces
for the others (`edgefleet.kernel.contracts.rollout`). The version it replaces is what the channel named
before the rollout started: the verified pointer's version, or the `replaces` of this same rollout's pointer
when the rollout already staged a share (raising or lowering the share keeps it). Share 0 is the halt: every
device goes back to (or stays on) `replaces`; share 0 with a `shadow_bp` is a shadow wave (that share runs the
version beside `replaces`, nobody activates it). One staged rollout per channel at a time: another one starts
when the previous one is at 100 % (it replaces that version) or halted at 0 % (it replaces what that one
replaced). Compare-and-swap like a promotion: a channel moved by anybody
else meanwhile is a ConflictError, never overridden.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgefleet.device.registry.object_keys import checked_version_prefix
from edgefleet.device.trust.version_bundle import verify_manifest_bytes
from edgefleet.flows.registry.channels import ChannelStore
from edgefleet.flows.registry.history import record_signed
from edgefleet.flows.trust.pointer_readback import ABSENT, CheckedChannel, untrusted_error
from edgefleet.flows.trust.pointer_signing import sign_pointer
from edgefleet.kernel.contracts.layout import MANIFEST_FILE
from edgefleet.kernel.contracts.manifest import ChannelPointer
from edgefleet.kernel.contracts.rollout import SHARE_BP_FULL, RolloutStage
from edgefleet.kernel.errors import ConflictError, RegistryError

log = logging.getLogger(__name__)


def partly_staged(pointer: ChannelPointer | None) -> str | None:
    """Why a pointer names two versions (a staged rollout above 0 % and below 100 %: each device its side of the
    share), None when it names one version for every device. Pure."""
    stage = pointer.rollout if pointer is not None else None
    if pointer is None or stage is None or stage.share_bp in (0, SHARE_BP_FULL):
        return None
    return (f"channel {pointer.channel} of {pointer.model} holds staged rollout {stage.id} of {pointer.version} at "
            f"{stage.share_bp / 100:g} % of the fleet (the others stay on {stage.replaces})")


def replaced_by_rollout(current: ChannelPointer, rollout_id: str, version: str) -> tuple[str, str]:
    """(version, manifest sha256) the rollout replaces, given the channel's verified pointer. Pure.

    Raises:
        ConflictError: another rollout is staged and not complete, or this rollout's pointer names another version.
    """
    stage = current.rollout
    if stage is None:
        return current.version, current.manifest_sha256
    if stage.id == rollout_id:
        if current.version != version:
            raise ConflictError(
                f"rollout {rollout_id} on channel {current.channel} of {current.model} stages {current.version}, "
                f"not {version}", "rollout ids name one version: give this rollout another rollout_id")
        return stage.replaces, stage.replaces_manifest_sha256
    if stage.share_bp == 0:  # a halted rollout: the fleet runs what it replaced
        return stage.replaces, stage.replaces_manifest_sha256
    if stage.share_bp < SHARE_BP_FULL:
        raise ConflictError(
            f"channel {current.channel} of {current.model} holds rollout {stage.id} of {current.version} at "
            f"{stage.share_bp / 100:g} %: one staged rollout per channel at a time",
            f"finish or halt rollout {stage.id} first (edgefleet rollout show {stage.id}), or promote the version "
            "the whole channel should name")
    return current.version, current.manifest_sha256


def stage_rollout(
    registry: ChannelStore,
    signing_key: Ed25519PrivateKey,
    *,
    model: str,
    channel: str,
    rollout_id: str,
    version: str,
    share_bp: int,
    by: str | None = None,
    validity: timedelta,
    shadow_bp: int | None = None,
) -> ChannelPointer:
    """Signs and writes the channel's pointer for rollout `rollout_id` of `version` at `share_bp` (see the module
    doc); returns the pointer now in the registry (unchanged when it already says exactly this). `shadow_bp`: the
    share that runs `version` as a shadow only (the shadow wave, issue 25; `RolloutStage.shadow_bp`). `validity`: how
long the pointer stays valid (`SigningParams.pointer_validity_days` of the rollout's form).

    Raises:
        RegistryError: the channel does not exist, or the version is not published.
        VerificationError: the channel's pointer or the version's manifest does not verify.
        ConflictError: another rollout holds the channel, or the channel changed while writing.
    """
    public_key = signing_key.public_key()
    checked = registry.read_channel_checked(model, channel, public_key)
    current = _verified(checked)
    replaces, replaces_sha = replaced_by_rollout(current, rollout_id, version)
    if current.rollout is not None and current.rollout.id == rollout_id and (
            current.rollout.share_bp, current.rollout.shadow_bp) == (share_bp, shadow_bp):
        return current
    manifest = registry.read_manifest(model, version)
    verify_manifest_bytes(manifest.raw, manifest.signature, public_key,
                          source=registry.describe(f"{checked_version_prefix(model, version)}/{MANIFEST_FILE}"))
    stage = RolloutStage(id=rollout_id, replaces=replaces, replaces_manifest_sha256=replaces_sha, share_bp=share_bp,
                         shadow_bp=shadow_bp)
    pointer = sign_pointer(signing_key, model=model, channel=channel, version=version,
                           manifest_sha256=manifest.manifest_sha256, previous=current,
                           validity=validity, updated_by=by, rollout=stage)
    registry.set_channel(model, channel, pointer, checked.generation)
    record_signed(registry, pointer)
    log.info("staged %s %s on channel %s at %s bp, shadow %s bp (rollout %s, replaces %s)", model, version, channel,
             share_bp, shadow_bp, rollout_id, replaces)
    return pointer


def _verified(checked: CheckedChannel) -> ChannelPointer:
    if checked.trust == ABSENT:
        raise RegistryError(f"channel {checked.channel} of model {checked.model} does not exist ({checked.source})",
                            "promote the version the fleet runs to the channel first: a staged rollout replaces it")
    if checked.verified is None:
        raise untrusted_error(checked, "staging a rollout")
    return checked.verified
