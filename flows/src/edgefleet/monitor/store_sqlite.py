"""The SQLite engine of the fleet state: one file in WAL mode, the embedded default (`make demo`).

Readers (the CLI, the rollout) never block the writer. Several writer processes may share the file: a write
transaction starts with BEGIN IMMEDIATE, so it holds SQLite's one write lock from its first read (the dedupe
decisions are then made on data no other writer can change before the commit; a second writer waits up to
`BUSY_TIMEOUT_MS`, then the batch is retried as transient). PostgreSQL's GREATEST/LEAST are registered as
functions so that the shared SQL text runs unchanged on both engines.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from contextlib import nullcontext
from pathlib import Path

from edgefleet.monitor.pending_rows import insert_rows
from edgefleet.monitor.store_engine import Engine
from edgefleet.monitor.store_schema import ADDED_COLUMNS, INDEXES, TABLES

BUSY_TIMEOUT_MS = 10_000


def _greatest(*values: float | None) -> float | None:  # the store's GREATEST/LEAST compare numbers
    present = [value for value in values if value is not None]
    return max(present) if present else None


def _least(*values: float | None) -> float | None:
    present = [value for value in values if value is not None]
    return min(present) if present else None


def connect(path: Path) -> sqlite3.Connection:
    """An open connection to the file at `path` (autocommit off; WAL; full sync)."""
    connection = sqlite3.connect(path, isolation_level="DEFERRED", check_same_thread=True)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    connection.create_function("GREATEST", -1, _greatest, deterministic=True)
    connection.create_function("LEAST", -1, _least, deterministic=True)
    return connection


def create_schema(connection: sqlite3.Connection) -> None:
    """Creates what is missing (tables, added columns, indexes) inside the open transaction."""
    begin_write(connection)
    for statement in TABLES.split(";"):
        if statement.strip():
            connection.execute(statement)
    for table, column, kind in ADDED_COLUMNS:
        present = {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            connection.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
    for statement in INDEXES.split(";"):
        if statement.strip():
            connection.execute(statement)


def begin_write(connection: sqlite3.Connection) -> None:
    """Takes the write lock now (BEGIN IMMEDIATE) unless a transaction is open."""
    if not connection.in_transaction:
        connection.execute("BEGIN IMMEDIATE")


def begin_read(connection: sqlite3.Connection) -> None:
    """A read transaction: WAL gives it one snapshot from its first read on."""
    connection.execute("BEGIN")


def lock_devices(connection: sqlite3.Connection, device_ids: Iterable[str]) -> None:
    """Nothing to do: the write transaction holds the whole file (BEGIN IMMEDIATE)."""
    begin_write(connection)


def has_table(connection: sqlite3.Connection, table: str) -> bool:
    return connection.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                              (table,)).fetchone() is not None


def analyze(connection: sqlite3.Connection) -> None:
    """SQLite's advice for long-lived connections: it analyzes only what its planner would use."""
    connection.execute("PRAGMA optimize")


ENGINE = Engine(name="sqlite", transient_errors=(sqlite3.OperationalError,), data_errors=(OverflowError,),
                errors=(sqlite3.Error,), begin_write=begin_write, begin_read=begin_read, lock_devices=lock_devices,
                has_table=has_table, analyze=analyze, insert_rows=insert_rows,
                pipeline=lambda connection: nullcontext())
