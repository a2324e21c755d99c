"""What one telemetry message does to the fleet state: validation, dedupe, gap accounting, the updates.

Pure of Pub/Sub: `handle` takes the bytes, id and attributes of a message and returns an `Outcome` that
says whether to ack. Nothing here commits; the caller commits a batch (`store.commit`) and only then
acks, so a crash between the two redelivers messages that dedupe then recognises.

Sequence accounting per device (seq starts at 1 and increases by one per message, across restarts):
- seq above the highest seen: new; any seqs skipped in between become a *counted* gap (lost messages).
- seq inside a gap: a late, out-of-order arrival; it is applied and removed from the gap (a counted gap
  shrinks, so the loss is not counted twice).
- anything else at or below the highest seen: a duplicate, acked and not counted.
- the first message of a device opens an *uncounted* gap below it: the monitor may have joined after the
  device started, so those are not losses, but a late arrival from there is still applied exactly once.
The latest snapshot (model, health, fps) comes from the highest seq, so late arrivals never overwrite it.
"""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import ValidationError

from edgefleet.device.trust.device_identity import parse_epoch
from edgefleet.kernel.contracts.layout import ATTR_DEVICE_ID
from edgefleet.kernel.contracts.telemetry import MAX_ATTRIBUTE_CHARS, MAX_INT, MAX_TELEMETRY_BYTES, TelemetryMessage
from edgefleet.kernel.errors import describe_validation_error
from edgefleet.monitor.aggregates import version_key
from edgefleet.monitor.device_rows import add_distributions, add_window, insert_device, snapshot_values
from edgefleet.monitor.pending_rows import add_counts, add_history, add_state_event, message_savepoint
from edgefleet.monitor.shadows import add_shadow
from edgefleet.monitor.store import FleetStore, lock_devices, to_epoch, write_pending
from edgefleet.monitor.telemetry_verifier import FORGED_PREFIX

log = logging.getLogger(__name__)

# Events that change whether a device counts as failing: failures set it, a good swap or start clears it.
FAILURE_EVENTS = frozenset({"swap_failed", "rollback", "error"})
RECOVERY_EVENTS = frozenset({"swap", "started"})
_MAX_ERROR_TEXT = 500
# Swaps and rollbacks name the version left in `Event.from_version`; agents from before that field only
# wrote it into the detail, "<from version> -> <to version>" (a rollback's model_version is the restored one).
_TRANSITION = re.compile(r"^\s*(\S+)\s*->\s*(\S+)\s*$")
TRANSITION_EVENTS = frozenset({"swap", "rollback"})


class Status(enum.Enum):
    """What became of one message."""

    APPLIED = "applied"
    LATE = "late"
    DUPLICATE = "duplicate"
    MALFORMED = "malformed"


@dataclass(frozen=True)
class Outcome:
    """The result of handling one message.

    Attributes:
        status: applied (new), late (filled a gap), duplicate, or malformed.
        device_id: the device, when known (malformed messages may still carry the attribute).
        seq: the message's seq, when it parsed.
        lost: change in the device's lost count: the seqs this message skipped over (applied), or -1 when
            it was a late arrival filling a counted gap.
        reason: why a malformed message was refused.
        model_name: the model the message reports, when it parsed and names one.
        model_version: that model's version.
    """

    status: Status
    device_id: str | None = None
    seq: int | None = None
    lost: int = 0
    reason: str = ""
    model_name: str | None = None
    model_version: str | None = None

    @property
    def ack(self) -> bool:
        """Acked once committed: everything but malformed (left for Pub/Sub to redeliver, then dead-letter)."""
        return self.status is not Status.MALFORMED


def decode(data: bytes) -> TelemetryMessage:
    """Parses and validates one message body (the contract's wire format: Avro JSON encoding or plain JSON).

    Raises:
        pydantic.ValidationError: not a valid message; ValueError: not JSON.
    """
    return TelemetryMessage.from_json_bytes(data)


def oversize_problem(data: bytes, attributes: Mapping[str, str]) -> str | None:
    """Why a message is too large to parse (None: it is not), from its raw size alone (issue 20, item 4)."""
    if len(data) > MAX_TELEMETRY_BYTES:
        return (f"a message of {len(data)} bytes, larger than the telemetry contract's MAX_TELEMETRY_BYTES "
                f"({MAX_TELEMETRY_BYTES}); not parsed")
    long = [name for name, value in attributes.items() if len(name) + len(value) > MAX_ATTRIBUTE_CHARS]
    if long:
        return f"attribute {long[0][:64]!r} longer than MAX_ATTRIBUTE_CHARS ({MAX_ATTRIBUTE_CHARS}); not parsed"
    return None


def handle(store: FleetStore, data: bytes, message_id: str, attributes: Mapping[str, str],
           received_at: float, *, verified: bool = False) -> Outcome:
    """Validates and applies one Pub/Sub message (not committed).

    Args:
        store: the open fleet state.
        data: the message body; its `device_id` is the sender (never an attribute beside it).
        message_id: the Pub/Sub message id (malformed messages are counted once per id).
        attributes: the Pub/Sub attributes (`epoch`; a `device_id` naming another device is refused).
        received_at: epoch seconds when the monitor received it: the time of everything it changes.
        verified: signed by the key of the device its body names (`TelemetryVerifier.check`).
    """
    claimed = attributes.get(ATTR_DEVICE_ID) or None
    if (too_large := oversize_problem(data, attributes)) is not None:
        return _refuse(store, message_id, claimed, too_large, received_at)
    try:
        message = decode(data)
    except ValidationError as error:
        return _refuse(store, message_id, claimed, describe_validation_error(error)[:_MAX_ERROR_TEXT], received_at)
    except (ValueError, TypeError, KeyError, RecursionError) as error:
        # Not JSON / not UTF-8 (ValueError), or JSON shaped so oddly that unwrapping the Avro encoding fails:
        # malformed all the same. Refusing it (rather than failing the batch) keeps one bad message from
        # stopping the monitor; Pub/Sub dead-letters it.
        return _refuse(store, message_id, claimed,
                       f"not a telemetry message ({type(error).__name__}: {error})"[:_MAX_ERROR_TEXT], received_at)
    if claimed is not None and claimed != message.device_id:
        return _refuse(store, message_id, message.device_id,
                       f"{FORGED_PREFIX}the device_id attribute {claimed[:64]!r} names another device than the "
                       f"message body", received_at)
    # Opens the transaction (so that releasing a savepoint never commits on its own) and locks the device:
    # another monitor's batch with it waits for our commit.
    lock_devices(store, [message.device_id])
    pending, device_state, writes = store.pending.copy(), store.rows.device_state(message.device_id), store.rows.writes
    try:
        with message_savepoint(store):
            untrusted = trust(store, message.device_id, verified=verified, received_at=received_at)
            lined = None if untrusted else in_epoch(store, message, attributes)  # one seq line per device
            outcome = None if lined is None else apply(store, lined, received_at=received_at)
    except (OverflowError, ValueError, *store.engine.data_errors) as error:  # ValueError: a malformed epoch
        # Valid JSON and schema, but a value the store cannot hold (seq or a count beyond 64 bits): this
        # message's partial changes are undone; it is treated as malformed rather than failing the whole batch
        # forever (unless earlier messages' pending rows went out inside it: then the batch is redone).
        if store.rows.writes != writes:
            raise
        store.pending = pending
        store.rows.restore(message.device_id, device_state)
        what = "a malformed attribute" if isinstance(error, ValueError) else "a value the store cannot hold"
        return _refuse(store, message_id, message.device_id, f"{what}: {error}", received_at)
    if untrusted is not None:
        return _refuse(store, message_id, message.device_id, untrusted, received_at)
    return Outcome(Status.DUPLICATE, device_id=message.device_id) if outcome is None else outcome


def trust(store: FleetStore, device_id: str, *, verified: bool, received_at: float) -> str | None:
    """Why an unverified message of `device_id` is refused (None: go on), inside the open transaction.

    Seqs and epochs advance only from signed messages once a device signs (issue 20, item 1): a device once
    heard signed is never again accepted unverified (not even in transition mode after its key record is
    gone), and the first verified message of a device heard only unverified so far starts its record afresh:
    what unverified messages claimed (seq, epochs, snapshot) cannot hold it back. Their counts, events and
    latency samples, kept by time, stay, moved below the new seq line (negative seqs)."""
    connection = store.connection
    if store.rows.verified.get(device_id):
        return None if verified else (f"{FORGED_PREFIX}device {device_id[:64]} signs its telemetry; an unsigned or "
                                      "unverifiable message naming it is refused")
    if verified:
        write_pending(store)  # what earlier messages of the batch left pending is counted and moved below too
        row = connection.execute("SELECT model_name, model_version, messages, duplicates, lost FROM devices "
                                 "WHERE device_id = ?", (device_id,)).fetchone()
        if row is not None:
            store.pending.device_removed(version_key(row[0], row[1]), *row[2:])
        for table in ("seq_gaps", "device_epochs", "devices"):
            connection.execute(f"DELETE FROM {table} WHERE device_id = ?", (device_id,))
        for table in ("events", "latency_samples"):  # kept, below the signed seq line (never in its way)
            connection.execute(f"UPDATE {table} SET seq = -seq WHERE device_id = ? AND seq > 0", (device_id,))
        connection.execute("INSERT INTO verified_devices (device_id, first_verified) VALUES (?, ?)",
                           (device_id, received_at))
        store.rows.restore(device_id, store.rows.fresh_state(verified=True))
    return None


def in_epoch(store: FleetStore, message: TelemetryMessage, attributes: Mapping[str, str]) -> TelemetryMessage | None:
    """Maps a message's (epoch, seq) onto the device's one seq line (issue 11, finding 5).

    A spool starts a new epoch when it is recreated (seq starts again at 1). The first epoch seen of a device
    starts at offset 0 (an upgraded agent keeps its seq); a later, higher epoch starts after the highest seq
    seen so far; a message of an unknown epoch lower than the device's latest is stale (None: acked, not
    applied). Without an epoch attribute (older agents) the seq is used as is.
    """
    epoch = parse_epoch(attributes)
    if epoch is None:
        return message
    device_id = message.device_id
    epochs = store.rows.epochs[device_id]  # read when the device was locked
    if epoch in epochs:
        base = epochs[epoch]
    else:
        latest = max(epochs, default=None)
        if latest is not None and epoch < latest:
            return None
        seen = store.rows.heads[device_id]
        base = 0 if latest is None or seen is None else seen[0]
        store.connection.execute("INSERT INTO device_epochs (device_id, epoch, base) VALUES (?, ?, ?)",
                                 (device_id, epoch, base))
        epochs[epoch] = base
    if base == 0:
        return message
    if base + message.seq > MAX_INT:
        raise OverflowError(f"seq {message.seq} of epoch {epoch} is beyond the largest seq after offset {base}")
    return message.model_copy(update={"seq": base + message.seq})


def _refuse(store: FleetStore, message_id: str, device_id: str | None, reason: str, received_at: float) -> Outcome:
    record_malformed(store, message_id, device_id, reason, received_at)
    log.warning("malformed telemetry message %s from %s: %s", message_id, device_id or "unknown device", reason)
    return Outcome(Status.MALFORMED, device_id=device_id, reason=reason)


def record_malformed(store: FleetStore, message_id: str, device_id: str | None, reason: str,
                     received_at: float) -> None:
    """Counts one delivery of a malformed message (distinct message ids are the malformed count)."""
    store.connection.execute(
        "INSERT INTO malformed (message_id, device_id, error, deliveries, first_received, last_received) "
        "VALUES (?, ?, ?, 1, ?, ?) ON CONFLICT (message_id) DO UPDATE SET deliveries = malformed.deliveries + 1, "
        "last_received = excluded.last_received",
        (message_id, device_id, reason, received_at, received_at))


def apply(store: FleetStore, message: TelemetryMessage, *, received_at: float | None = None) -> Outcome:
    """Applies one valid message to the fleet state inside the open transaction (see the module docstring).

    Args:
        store: the open fleet state.
        message: a validated telemetry message.
        received_at: epoch seconds when it was received: the time of everything this message changes (the
            device's clock is not trusted). None (replays and tests of stored messages only): the message time.
    """
    connection = store.connection
    when = to_epoch(message.time) if received_at is None else received_at
    received = when
    lock_devices(store, [message.device_id])
    row = store.rows.heads[message.device_id]  # (max_seq, model_name, model_version), read at the lock
    lost = 0
    new_key = version_key(message.model.name if message.model else None,
                          message.model.version if message.model else None)
    if row is None:
        insert_device(connection, message, when, received)
        store.rows.heads[message.device_id] = (message.seq, *_model_of(message))
        store.pending.device_added(new_key)
        store.pending.count(messages=1)
        if message.seq > 1:
            store.rows.gaps[message.device_id].add(1, message.seq - 1, 0)
        status = Status.APPLIED
    elif message.seq > row[0]:
        lost = message.seq - row[0] - 1
        if lost:
            store.rows.gaps[message.device_id].add(row[0] + 1, message.seq - 1, 1)
        _newer_snapshot(store, message, when, received, lost)
        store.pending.device_moved(version_key(row[1], row[2]), new_key)
        store.pending.count(messages=1, lost=lost)
        status = Status.APPLIED
    elif (filled := _fill_gap(store, message.device_id, message.seq)) is not None:
        lost = -filled
        delta = store.rows.delta(message.device_id)
        delta.messages += 1
        delta.lost += lost
        delta.seen(when, received, late=True)
        store.pending.count(messages=1, lost=lost)
        status = Status.LATE
    else:
        store.rows.delta(message.device_id).duplicates += 1
        store.pending.count(duplicates=1)
        return Outcome(Status.DUPLICATE, device_id=message.device_id, seq=message.seq)
    _record_facts(store, message, when)
    return Outcome(status, device_id=message.device_id, seq=message.seq, lost=lost,
                   model_name=message.model.name if message.model else None,
                   model_version=message.model.version if message.model else None)


def transition_from(kind: str, detail: str, from_version: str | None = None) -> str | None:
    """The version a swap or rollback left: the event's `from_version`, else (agents before that field) read
    from its "<from> -> <to>" detail; None for other events."""
    if kind not in TRANSITION_EVENTS:
        return None
    if from_version:
        return from_version
    match = _TRANSITION.match(detail)
    return match.group(1) if match else None


def _fill_gap(store: FleetStore, device_id: str, seq: int) -> int | None:
    """Removes `seq` from the gap holding it: 1 if that gap counted as lost, 0 if not, None when no gap
    holds it (a duplicate). The device's recent gaps were read at its lock (`pending_rows.DeviceGaps`); a seq
    older than those is looked up in the table."""
    gaps = store.rows.gaps[device_id]
    if seq > gaps.low:
        return gaps.fill(seq)
    connection = store.connection
    gap = connection.execute(
        "SELECT first_seq, last_seq, counted FROM seq_gaps WHERE device_id = ? AND first_seq <= ? "
        "ORDER BY first_seq DESC LIMIT 1", (device_id, seq)).fetchone()
    if gap is None or gap[1] < seq:
        return None
    first, last, counted = gap
    connection.execute("DELETE FROM seq_gaps WHERE device_id = ? AND first_seq = ?", (device_id, first))
    pieces = [(first, seq - 1), (seq + 1, last)]
    connection.executemany(
        "INSERT INTO seq_gaps (device_id, first_seq, last_seq, counted) VALUES (?, ?, ?, ?)",
        [(device_id, low, high, counted) for low, high in pieces if low <= high])
    return counted


def _model_of(message: TelemetryMessage) -> tuple[str | None, str | None]:
    return (message.model.name, message.model.version) if message.model else (None, None)


def _newer_snapshot(store: FleetStore, message: TelemetryMessage, when: float, received: float, lost: int) -> None:
    """The device's snapshot from a message above its highest seq (pending); `lost` seqs were skipped."""
    delta = store.rows.delta(message.device_id)
    delta.snapshot.update(snapshot_values(message))
    delta.max_seq = message.seq
    delta.messages += 1
    delta.lost += lost
    delta.seen(when, received)
    store.rows.heads[message.device_id] = (message.seq, *_model_of(message))


def _record_facts(store: FleetStore, message: TelemetryMessage, when: float) -> None:
    """Counts, latency sample, event and version history of a message applied for the first time."""
    rows = store.rows  # written at commit, merged per row (`pending_rows`)
    device_id, model, inference, event = message.device_id, message.model, message.inference, message.event
    if model is None:
        store.dirty_windows.add((device_id, "", ""))  # so the cached window of the device is refreshed (emptied)
    else:
        add_history(rows, (device_id, model.name, model.version, model.variant, model.backend), when, message.seq)
        store.dirty_windows.add((device_id, model.name, model.version))
    if model is not None and inference is not None:
        bucket = when - when % store.count_bucket_s
        add_counts(rows, (device_id, model.name, model.version, bucket), inference.count, inference.errors)
        if inference.dist is not None:
            add_distributions(rows, (device_id, model.name, model.version, bucket), inference.dist)
            if store.drift_windows:
                add_window(rows, (device_id, model.name, model.version, message.seq), when, inference.dist)
        if inference.shadow is not None:
            add_shadow(rows.shadows, (device_id, model.name, model.version, inference.shadow.model.version,
                                      bucket), inference.shadow)
        if inference.count or inference.errors:
            rows.samples.setdefault((device_id, model.name, model.version, message.seq), (
                device_id, model.name, model.version, message.seq, when, inference.latency_ms_p50,
                inference.latency_ms_p95, inference.count, inference.errors))
    if event is not None:
        # The version an event names (the agent: the candidate of a swap or swap_failed, the version restored
        # by a rollback), else the one running when it happened.
        version = event.model_version or (model.version if model else None)
        rows.events.setdefault((device_id, message.seq), (
            device_id, message.seq, when, event.kind, event.detail, model.name if model else None, version,
            transition_from(event.kind, event.detail, event.from_version)))
        if event.kind in FAILURE_EVENTS or event.kind in RECOVERY_EVENTS:
            add_state_event(rows, device_id, event.kind, when, message.seq)
