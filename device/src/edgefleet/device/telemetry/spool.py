"""The on-disk telemetry spool: every message is written here first and leaves only when it was delivered.

One SQLite database (WAL journal) holds the messages not yet delivered and two persisted counters: the last
`seq` handed out (so `seq` keeps increasing across restarts, even when the spool is empty) and the number of
messages dropped because the spool was full. One connection is shared by the threads that use the spool,
behind a lock; appends and deletes are single transactions, so a crash leaves either all of a batch or none.

Bounded twice: by message count (`max_messages`) and by database size (`max_bytes`, SQLite's
`max_page_count`, which is also how a full disk looks). Either way the OLDEST messages are dropped first and
counted, because fresh telemetry says more about a device than stale telemetry.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from edgefleet.device.telemetry.spool_errors import is_corrupt, is_full, quarantine, spool_error
from edgefleet.kernel.contracts.layout import ATTR_EPOCH
from edgefleet.kernel.contracts.telemetry import TelemetryMessage
from edgefleet.kernel.errors import TelemetryError

log = logging.getLogger(__name__)

MessageSigner = Callable[[bytes, str, int], dict[str, str]]
"""(message bytes, device id, spool epoch) -> the attributes that sign it."""
MessageBuild = Callable[[int], TelemetryMessage]
"""Builds the message that gets the given `seq` (called inside the spool's transaction)."""

_SCHEMA_VERSION = 1
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS messages"
    " (seq INTEGER PRIMARY KEY, data BLOB NOT NULL, attributes TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO counters (name, value) VALUES ('last_seq', 0), ('dropped', 0)",
)
class SpoolEntry(NamedTuple):
    """One spooled message, exactly as it goes on the wire."""

    seq: int
    data: bytes
    attributes: dict[str, str]


class SpoolStats(NamedTuple):
    """A snapshot of the spool's counters."""

    depth: int
    """Messages waiting to be delivered."""
    dropped: int
    """Messages dropped because the spool was full, since the spool file was created."""
    last_seq: int
    """The last `seq` handed out (0 before the first message)."""


class Spool:
    """A bounded, durable FIFO of telemetry messages that also owns the device's `seq` counter.

    Thread-safe: the agent's telemetry stage appends while the publisher thread peeks and acks.

    Args:
        path: The SQLite file (created with its directory if missing).
        max_messages: Bound on messages held; appending beyond it drops the oldest, counted in `dropped`.
        max_bytes: Bound on the database size (None: only the disk bounds it); beyond it the oldest are
            dropped as well.
        synchronous: SQLite `synchronous` mode, 'full' (survives power loss) or 'normal' (process crash).
        signer: (data, device_id, epoch) -> attributes that authenticate the message (the device key's
            signature, `edgefleet.device.trust.device_identity.sign_telemetry`); None: unsigned.

    A corrupt database is moved aside (`quarantined`) and a new spool started, with a new `epoch`.

    Raises:
        TelemetryError: the file cannot be created or opened (naming the path and the fix).
    """

    def __init__(
        self,
        path: Path | str,
        max_messages: int,
        *,
        max_bytes: int | None = None,
        synchronous: str = "full",
        signer: MessageSigner | None = None,
    ) -> None:
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, got {max_messages}")
        if synchronous not in ("full", "normal"):
            raise ValueError(f"synchronous must be 'full' or 'normal', got {synchronous!r}")
        self.path = Path(path)
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._closed = False
        self._wakeups = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise spool_error(self.path, "creating its directory", error) from error
        self.signer = signer
        self.quarantined: Path | None = None
        try:
            self._open(synchronous)
        except TelemetryError as error:
            if not is_corrupt(error.__cause__):
                raise
            # A corrupt spool would crash-loop the agent: set it aside (its unsent telemetry is lost, and
            # said so) and start a new spool with a new epoch, so the monitor does not take the restarted
            # seq for duplicates.
            self.quarantined = quarantine(self.path)
            log.error(
                "telemetry spool %s is corrupt (%s): moved aside to %s; starting a new spool (new epoch)",
                self.path,
                error.__cause__,
                self.quarantined,
            )
            self._open(synchronous)
        log.info(
            "telemetry spool %s: %d waiting, last seq %d, %d dropped so far",
            self.path,
            self._stats.depth,
            self._stats.last_seq,
            self._stats.dropped,
        )

    def _open(self, synchronous: str) -> None:
        try:
            self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as error:
            raise spool_error(self.path, "opening", error) from error
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA:
                self._conn.execute(statement)
            self._conn.execute(
                "INSERT OR IGNORE INTO counters (name, value) VALUES ('epoch', ?)", (int(time.time() * 1000),)
            )
            self._conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
            self._conn.execute("COMMIT")
            if self.max_bytes is not None:
                page_size = self._conn.execute("PRAGMA page_size").fetchone()[0]
                self._conn.execute(f"PRAGMA max_page_count={max(1, self.max_bytes // page_size)}")
            self._stats = SpoolStats(
                depth=self._conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0],
                dropped=self._counter("dropped"),
                last_seq=self._counter("last_seq"),
            )
            self.epoch = self._counter("epoch")
        except sqlite3.Error as error:
            self._rollback()
            self._conn.close()
            raise spool_error(self.path, "opening", error) from error

    # --- counters (the fields of `stats()`, one at a time) -----------------------------------------------
    depth = property(lambda self: self._stats.depth, doc="Messages waiting to be delivered.")
    dropped = property(lambda self: self._stats.dropped, doc="Messages dropped because the spool was full.")
    last_seq = property(lambda self: self._stats.last_seq, doc="The last `seq` handed out (0 before the first).")

    @property
    def closed(self) -> bool:
        """True after `close()`."""
        return self._closed

    def stats(self) -> SpoolStats:
        """A consistent snapshot of depth, dropped and last seq."""
        with self._lock:
            return self._stats

    # --- writing ----------------------------------------------------------------------------------------
    def append(self, build: MessageBuild) -> int:
        """Allocates the next `seq`, builds the message with it and stores it, in one transaction.

        Args:
            build: Called with the allocated seq; returns the message (whose `seq` must be that seq).

        Returns:
            The seq of the stored message.

        Raises:
            TelemetryError: SQLite or the disk failed (nothing was stored, no seq was used).
        """
        return self.append_many([build])[0]

    def append_many(self, builds: Sequence[MessageBuild]) -> list[int]:
        """Like `append` for a batch, in one transaction (one fsync): all are stored or none.

        When the spool is full, the oldest messages are dropped (and counted) to make room.

        Returns:
            The seqs given to the messages, in order.

        Raises:
            TelemetryError: SQLite or the disk failed, or the batch alone does not fit in `max_bytes`.
            ValueError: a build returned a message whose seq is not the one it was given.
        """
        if not builds:
            return []
        with self._lock:
            self._check_open()
            make_room = 0
            while True:
                try:
                    seqs = self._append_locked(builds, make_room)
                except sqlite3.Error as error:
                    self._rollback()
                    if not is_full(error) or make_room >= self._stats.depth:
                        raise spool_error(self.path, f"appending {len(builds)} message(s)", error) from error
                    # The database hit max_bytes (or the disk is full): retry, dropping the oldest messages
                    # in the same transaction (twice as many each round), so a batch that cannot fit at all
                    # fails without having dropped anything.
                    make_room = min(self._stats.depth, max(len(builds), 2 * make_room))
                    continue
                except BaseException:
                    self._rollback()
                    raise
                self._changed.notify_all()
                return seqs

    def _append_locked(self, builds: Sequence[MessageBuild], make_room: int) -> list[int]:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        dropped_now = self._delete_oldest(make_room) if make_room else 0
        first = self._counter("last_seq") + 1
        rows: list[tuple[int, bytes, str]] = []
        for offset, build in enumerate(builds):
            seq = first + offset
            message = build(seq)
            if message.seq != seq:
                raise ValueError(f"the message built for seq {seq} carries seq {message.seq}")
            data = message.to_json_bytes()
            attributes = message.attributes() | {ATTR_EPOCH: str(self.epoch)}
            if self.signer is not None:
                attributes |= self.signer(data, message.device_id, self.epoch)
            rows.append((seq, data, json.dumps(attributes, sort_keys=True)))
        conn.executemany("INSERT INTO messages (seq, data, attributes) VALUES (?, ?, ?)", rows)
        last = first + len(rows) - 1
        conn.execute("UPDATE counters SET value = ? WHERE name = 'last_seq'", (last,))
        overflow = self._stats.depth - dropped_now + len(rows) - self.max_messages
        if overflow > 0:
            dropped_now += self._delete_oldest(overflow)
        conn.execute("COMMIT")
        stats = self._stats
        self._stats = SpoolStats(stats.depth + len(rows) - dropped_now, stats.dropped + dropped_now, last)
        if dropped_now:
            reason = "its disk bound" if make_room else f"its bound of {self.max_messages} messages"
            log.warning(
                "telemetry spool %s is at %s: dropped the %d oldest (%d in all)",
                self.path,
                reason,
                dropped_now,
                self._stats.dropped,
            )
        return list(range(first, last + 1))

    def _delete_oldest(self, count: int) -> int:
        """Deletes the `count` oldest messages and counts them as dropped (inside a transaction)."""
        cursor = self._conn.execute(
            "DELETE FROM messages WHERE seq IN (SELECT seq FROM messages ORDER BY seq LIMIT ?)", (count,)
        )
        deleted = cursor.rowcount
        self._conn.execute("UPDATE counters SET value = value + ? WHERE name = 'dropped'", (deleted,))
        return deleted

    # --- reading and acknowledging ----------------------------------------------------------------------
    def peek(self, limit: int) -> list[SpoolEntry]:
        """Up to `limit` waiting messages, oldest first, without removing them.

        Raises:
            TelemetryError: SQLite failed.
        """
        with self._lock:
            self._check_open()
            try:
                rows = self._conn.execute(
                    "SELECT seq, data, attributes FROM messages ORDER BY seq LIMIT ?", (limit,)
                ).fetchall()
            except sqlite3.Error as error:
                raise spool_error(self.path, "reading", error) from error
        return [SpoolEntry(seq, bytes(data), json.loads(attributes)) for seq, data, attributes in rows]

    def ack(self, seqs: Iterable[int]) -> int:
        """Deletes delivered messages; seqs no longer in the spool (dropped meanwhile) are ignored.

        Returns:
            How many messages were deleted.

        Raises:
            TelemetryError: SQLite failed (the messages stay, and will be delivered again: a duplicate, not
                a loss).
        """
        params = [(seq,) for seq in seqs]
        if not params:
            return 0
        with self._lock:
            self._check_open()
            try:
                before = self._conn.total_changes
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.executemany("DELETE FROM messages WHERE seq = ?", params)
                self._conn.execute("COMMIT")
            except sqlite3.Error as error:
                self._rollback()
                raise spool_error(
                    self.path, f"deleting {len(params)} delivered message(s)", error
                ) from error
            deleted = self._conn.total_changes - before
            self._stats = self._stats._replace(depth=self._stats.depth - deleted)
            self._changed.notify_all()
        return deleted

    def wait_for_messages(self, timeout_s: float) -> bool:
        """Blocks until the spool holds a message, `wake()` is called or `timeout_s` passes.

        Returns:
            True when a message is waiting.
        """
        with self._lock:
            wakeups = self._wakeups
            self._changed.wait_for(
                lambda: self._stats.depth > 0 or self._closed or self._wakeups != wakeups, timeout_s
            )
            return self._stats.depth > 0 and not self._closed

    def wake(self) -> None:
        """Ends every `wait_for_messages` now (a publisher that is asked to stop calls it)."""
        with self._lock:
            self._wakeups += 1
            self._changed.notify_all()

    # --- lifecycle --------------------------------------------------------------------------------------
    def close(self) -> None:
        """Closes the database; later calls raise TelemetryError. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._changed.notify_all()
            try:
                self._conn.close()
            except sqlite3.Error as error:
                log.warning("telemetry spool %s: closing failed: %s", self.path, error)

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- helpers ----------------------------------------------------------------------------------------
    def _counter(self, name: str) -> int:
        return self._conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()[0]

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error as error:
                log.warning("telemetry spool %s: rollback failed: %s", self.path, error)

    def _check_open(self) -> None:
        if self._closed:
            raise TelemetryError(
                f"telemetry spool {self.path} is closed",
                "open a new Spool (the telemetry service reopens it on start)",
            )
