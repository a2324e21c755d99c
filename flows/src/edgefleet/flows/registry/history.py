"""The signed pointer history: the pointers the pipelines signed, kept per model in the registry
(`pointer-history/<model>.json`), so that converting an unsigned pointer can refuse a version no signed pointer
ever named (`edgefleet.flows.trust.convert_unsigned`).

Why a record kept by the signer, and not derived: a version's signed manifest says it was released, not that a
channel ever pointed at it (a release halted by its canary is published too), and the registry's own object
history cannot be relied on (GCS object versioning is optional, the local registry has none). Each entry is a
complete signed pointer and is verified when read, so a bucket writer cannot add a version to the history;
removing entries only makes a conversion refuse more. The channels' current pointers that verify count too
(pointers signed before this history existed).

Entries: the newest pointer per (channel, version, manifest sha256, downgrade), at most `MAX_HISTORY_ENTRIES`
(the oldest go first), so the daily re-signing does not grow it. Written by compare-and-swap; a history that
cannot be written is logged, never fails the move it records (the pointer is already in place, and a missing
entry only makes a later conversion refuse).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from pydantic import ValidationError

from edgefleet.device.registry.object_keys import checked_name
from edgefleet.device.trust.pointers import verify_pointer
from edgefleet.flows.trust.pointer_readback import VERIFIED
from edgefleet.kernel.contracts.manifest import ChannelPointer
from edgefleet.kernel.errors import ConflictError, EdgefleetError, VerificationError
from edgefleet.kernel.trust.signatures import PublicKeyLike, resolve_public_key

log = logging.getLogger(__name__)

HISTORY_PREFIX = "pointer-history"
HISTORY_SCHEMA = "edgefleet.pointer-history/1"
MAX_HISTORY_ENTRIES = 1000


class _Registry(Protocol):
    """What the history needs of a registry writer (a Protocol: `channels.ChannelStore` uses this module)."""

    options: Any

    def describe(self, key: str) -> str: ...
    def read_json(self, key: str) -> Any: ...
    def put_json(self, key: str, obj: Any, *, expected_generation: int | None = None) -> int: ...
    def list_channels(self, model: str) -> list[str]: ...
    def read_channel_checked(self, model: str, channel: str, public_key: PublicKeyLike) -> Any: ...


def history_key(model: str) -> str:
    """The record key of a model's signed pointer history."""
    return f"{HISTORY_PREFIX}/{checked_name('model', model)}.json"


def _identity(entry: dict[str, Any]) -> tuple[Any, ...]:
    return (entry.get("channel"), entry.get("version"), entry.get("manifest_sha256"), bool(entry.get("downgrade")))


def merged(
    entries: list[dict[str, Any]], pointer: ChannelPointer, limit: int = MAX_HISTORY_ENTRIES
) -> list[dict[str, Any]]:
    """The history's entries with `pointer` added (replacing an older one of the same identity), oldest first,
    at most `limit`. Pure."""
    new = pointer.model_dump(mode="json", by_alias=True)
    kept = [entry for entry in entries if isinstance(entry, dict) and _identity(entry) != _identity(new)]
    return [*kept, new][-limit:]


def _entries(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, dict) and isinstance(value.get("pointers"), list):
        return [entry for entry in value["pointers"] if isinstance(entry, dict)]
    return []


def record_signed(registry: _Registry, pointer: ChannelPointer) -> None:
    """Adds a pointer the pipeline just signed and wrote to its model's history (compare-and-swap, retried)."""
    key = history_key(pointer.model)
    for _attempt in range(registry.options.promote_attempts):
        try:
            record = registry.read_json(key)
            document = {"schema": HISTORY_SCHEMA, "pointers": merged(_entries(record.value), pointer)}
            registry.put_json(key, document, expected_generation=record.generation)
            return
        except ConflictError:
            continue
        except EdgefleetError as error:
            log.warning("could not record the signed pointer in %s: %s", registry.describe(key), error.message)
            return
    log.warning("could not record the signed pointer in %s: it kept changing", registry.describe(key))


def signed_pointers(registry: _Registry, model: str, public_key: PublicKeyLike) -> list[ChannelPointer]:
    """Every pointer of `model` that verifies against the release key: the history's, and the channels' current
    ones. Entries that do not parse or verify are skipped (and logged)."""
    key, _ = resolve_public_key(public_key)
    found: list[ChannelPointer] = []
    skipped = 0
    try:
        entries = _entries(registry.read_json(history_key(model)).value)
    except EdgefleetError as error:
        log.warning("signed pointer history of %s is unreadable: %s", model, error.message)
        entries = []
    for entry in entries:
        try:
            pointer = ChannelPointer.model_validate(entry)
        except ValidationError:
            skipped += 1
            continue
        checked = _checked(pointer, key) if pointer.model == model else None
        if checked is None:
            skipped += 1
        else:
            found.append(checked)
    if skipped:
        log.warning("%d entries of the signed pointer history of %s do not verify: ignored", skipped, model)
    for channel in registry.list_channels(model):
        current = registry.read_channel_checked(model, channel, key)
        if current.trust == VERIFIED and current.pointer is not None:
            found.append(current.pointer)
    return found


def _checked(pointer: ChannelPointer, key: PublicKeyLike) -> ChannelPointer | None:
    """`pointer` when it is signed and verifies against `key`, else None."""
    try:
        verify_pointer(key, pointer, source="the signed pointer history")
    except VerificationError:
        return None
    return pointer
