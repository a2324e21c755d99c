"""`doctor`'s view of a channel pointer: judged as the agent would judge it, its version shown only once
verified (a registry writer must not make an operator believe a device follows a version nobody signed)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING

from edgefleet.device.store_reader import StoreReader
from edgefleet.device.trust.pointers import RECORD_FILE, assess_pointer, parse_record, version_identity
from edgefleet.kernel.contracts.manifest import ChannelPointer
from edgefleet.kernel.errors import EdgefleetError
from edgefleet.kernel.findings import Status

if TYPE_CHECKING:
    from edgefleet.device.agent.config import AgentConfig

RESIGN_FIX = ("have the release pipeline sign the channel (edgefleet registry promote --signing-key, or the "
              "resign-channels deployment); the agent stays on the version it runs meanwhile")


def pointer_check(
    config: AgentConfig, pointer: ChannelPointer, *, source: str, now: datetime | None = None
) -> tuple[Status, str, str | None]:
    """(status, detail, fix) of the configured channel's pointer for this agent."""
    store = StoreReader(config.root, config.public_key_path)
    try:
        current = store.current(config.model)
        record = parse_record(store.read_model_file(config.model, RECORD_FILE),
                              source=f"{store.root} {config.model} {RECORD_FILE}")
        judgement = assess_pointer(
            config.public_key_path, pointer, record, floor=store.floor(config.model),
            now=now or datetime.now(timezone.utc), source=source,
            require_signed=config.registry.require_signed_pointers,
            running=version_identity(current.version, current.manifest_sha256) if current else None,
            device_id=config.device_id,
        )
    except EdgefleetError as error:
        return Status.WARN, f"the pointer could not be checked (its version is not shown): {error.message}", error.fix
    if judgement.verdict == "refuse":
        return Status.WARN, f"this agent refuses the pointer: {judgement.reason}", RESIGN_FIX
    if judgement.verdict == "expired":
        return Status.WARN, judgement.reason, RESIGN_FIX
    if not pointer.signed:
        return (Status.WARN, f"{pointer.version} (unsigned, unverified)",
                "sign the channel pointers, then drop registry.require_signed_pointers: false (README: upgrading "
                "a fleet that ran the old defaults)")
    target = judgement.target or pointer
    stage = pointer.rollout
    staged = f", rollout {stage.id} at {stage.share_bp / 100:g} %" if stage is not None else ""
    return Status.OK, f"{target.version} (signature verified, expires {pointer.expires_at:%Y-%m-%d}{staged})", None
