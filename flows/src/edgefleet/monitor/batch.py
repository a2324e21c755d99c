"""One batch of Pub/Sub messages into the fleet state: apply, commit, then ack (or nack the refused).

`edgefleet.monitor.service` streams the messages and calls `process_batch`; what one message does is
`edgefleet.monitor.ingest.handle`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from google.cloud.pubsub_v1.subscriber.message import Message

from edgefleet.kernel.contracts.layout import ATTR_DEVICE_ID
from edgefleet.monitor.ingest import Outcome, Status, handle, oversize_problem, record_malformed
from edgefleet.monitor.store import FleetStore, commit, lock_devices, rollback
from edgefleet.monitor.telemetry_verifier import TelemetryVerdict, TelemetryVerifier

log = logging.getLogger(__name__)

CONFLICT_RETRIES = 3  # a batch that lost a deadlock or serialization conflict to another monitor is redone
_CONFLICT_SQLSTATE_CLASS = "40"  # transaction rollback: serialization failure, deadlock detected


def process_batch(store: FleetStore, batch: Sequence[Message], received_at: float,
                  verifier: TelemetryVerifier | None = None) -> list[Outcome]:
    """Applies `batch`, commits, then acks the committed and nacks the malformed.

    A transient store error (SQLite busy, locked, disk momentarily full) rolls the transaction back, nacks
    every message and is re-raised (the caller resubscribes after a back-off). Any other error while
    applying or committing (a message the store cannot take, a bug) rolls back and retries the batch message
    by message, each committed alone: only the message that fails alone is refused (counted as malformed,
    nacked, so Pub/Sub dead-letters it after the subscription's max delivery attempts), and every other
    message is applied exactly once. A message larger than the telemetry contract allows is refused before
    anything parses it. With a `verifier`, a message whose signature does not hold is refused the same way
    (counted as malformed with a reason starting `FORGED_PREFIX`). The devices of the batch are locked first,
    in sorted order (PostgreSQL: other monitors' batches of the same devices wait for this commit); a batch
    that loses a deadlock or serialization conflict anyway is redone up to `CONFLICT_RETRIES` times.
    """
    outcomes = None
    for attempt in range(CONFLICT_RETRIES + 1):
        try:
            outcomes = _apply_all(store, batch, received_at, verifier)
            break
        except store.engine.transient_errors as error:
            rollback(store)
            if attempt < CONFLICT_RETRIES and is_conflict(error):
                log.info("batch lost a conflict with another writer (%s); redoing it", error)
                continue
            for message in batch:
                message.nack()
            raise
    if outcomes is None:
        return _one_by_one(store, batch, received_at, verifier)
    _settle(batch, outcomes)
    return outcomes


def is_conflict(error: BaseException) -> bool:
    """A deadlock or serialization failure (SQLSTATE class 40): redoing the transaction can succeed."""
    return str(getattr(error, "sqlstate", "") or "").startswith(_CONFLICT_SQLSTATE_CLASS)


def _apply_all(store: FleetStore, batch: Sequence[Message], received_at: float,
               verifier: TelemetryVerifier | None) -> list[Outcome] | None:
    """The batch's outcomes, committed; None (rolled back) when something other than a transient error failed."""
    try:
        lock_devices(store, {message.attributes.get(ATTR_DEVICE_ID) or "" for message in batch} - {""})
        outcomes = [_handle(store, message, received_at, verifier) for message in batch]
        commit(store)
    except store.engine.transient_errors:
        raise
    except Exception:  # noqa: BLE001 - one bad message must not stop the monitor: find it, refuse it alone
        rollback(store)
        log.warning("a batch of %d messages failed to apply; retrying them one by one", len(batch),
                    exc_info=True)
        return None
    return outcomes


def _handle(store: FleetStore, message: Message, received_at: float, verifier: TelemetryVerifier | None) -> Outcome:
    attributes = message.attributes
    if (too_large := oversize_problem(message.data, attributes)) is not None:  # before anything parses it
        return _refused(store, message, attributes.get(ATTR_DEVICE_ID) or None, too_large, received_at)
    verdict = TelemetryVerdict(None) if verifier is None else verifier.check(message.data, attributes)
    if verdict.problem is not None:
        return _refused(store, message, verdict.device_id, verdict.problem, received_at)
    return handle(store, message.data, message.message_id, attributes, received_at, verified=verdict.verified)


def _refused(store: FleetStore, message: Message, device_id: str | None, problem: str, received_at: float) -> Outcome:
    record_malformed(store, message.message_id, device_id, problem[:500], received_at)
    log.warning("refused telemetry message %s: %s", message.message_id, problem)
    return Outcome(Status.MALFORMED, device_id=device_id, reason=problem)


def _one_by_one(store: FleetStore, batch: Sequence[Message], received_at: float,
                verifier: TelemetryVerifier | None) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for index, message in enumerate(batch):
        try:
            outcome = _handle(store, message, received_at, verifier)
            commit(store)
        except store.engine.transient_errors:
            rollback(store)
            _settle(batch[:index], outcomes)
            for rest in batch[index:]:
                rest.nack()
            raise
        except Exception as error:  # noqa: BLE001 - this message alone fails: refuse it, keep going
            rollback(store)
            outcome = _refused_alone(store, message, error, received_at)
        outcomes.append(outcome)
    _settle(batch, outcomes)
    return outcomes


def _refused_alone(store: FleetStore, message: Message, error: Exception, received_at: float) -> Outcome:
    device_id = message.attributes.get(ATTR_DEVICE_ID) or None
    reason = f"the fleet state cannot take this message ({type(error).__name__}: {error})"[:500]
    log.error("message %s from %s refused: %s", message.message_id, device_id or "an unknown device", reason)
    try:
        record_malformed(store, message.message_id, device_id, reason, received_at)
        commit(store)
    except store.engine.errors:
        rollback(store)
        log.warning("could not count message %s as malformed", message.message_id, exc_info=True)
    return Outcome(Status.MALFORMED, device_id=device_id, reason=reason)


def _settle(batch: Sequence[Message], outcomes: Sequence[Outcome]) -> None:
    for message, outcome in zip(batch, outcomes, strict=True):
        if outcome.ack:
            message.ack()
        else:
            message.nack()
