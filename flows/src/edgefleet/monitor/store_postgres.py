"""The PostgreSQL engine of the fleet state (psycopg 3): several monitor processes on one subscription.

The store's SQL is written once, in the subset both engines share, with `?` placeholders; `translate` turns
it into psycopg's (`%s`) and maps the one SQLite-only idiom left (`json_each(?)` over a JSON list of ids).

Concurrency: write transactions run at READ COMMITTED and lock each device they change with a transaction
advisory lock (`lock_devices`, sorted, so two monitors never wait on each other in a cycle). Every read
that a dedupe decision rests on (max_seq, gaps, epochs) happens after the lock, so it sees the last commit
of any other monitor (they are read once per batch, right after the lock: `pending_rows.load`): each
(device, epoch, seq) is applied once and no update is lost. The batch's row changes are upserted as
`x = x + delta` (or LEAST/GREATEST) at commit, one `executemany` per table (psycopg 3.1+ sends it in
pipeline mode: one round trip, not one per row), as are the counters shared by many devices (`aggregates`);
PostgreSQL applies each atomically.
Readers use REPEATABLE READ, READ ONLY: several SELECTs see one snapshot.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from decimal import Decimal
from typing import Any, LiteralString, cast

import psycopg
from psycopg.adapt import Loader
from psycopg.pq import TransactionStatus

from edgefleet.monitor.store_engine import Engine
from edgefleet.monitor.store_schema import ADDED_COLUMNS, INDEXES, TABLES, postgres_ddl, statements

SCHEMA_LOCK_KEY = 0x6564676566  # pg_advisory_xact_lock key serialising schema creation ("edgef")
CONNECT_TIMEOUT_S = 10
_JSON_IDS = re.compile(r"json_each\(%s\)")


class _NumberLoader(Loader):
    """NUMERIC (what SUM of a BIGINT returns) as an int when whole, else a float, as SQLite returns them."""

    def load(self, data: Any) -> int | float:
        value = Decimal(bytes(data).decode())
        return int(value) if value == value.to_integral_value() else float(value)


@functools.lru_cache(maxsize=512)
def translate(sql: str) -> LiteralString:
    """The store's SQL (`?` placeholders) as psycopg SQL.

    psycopg types its queries LiteralString (SQL text from the program, values only in parameters). The store's
    SQL is that: this package's own text, built from its constants, every value a `?` parameter; the f-strings
    that assemble it and the placeholder rewrite here lose the literal type, not the property.
    """
    sql = sql.replace("%", "%%").replace("?", "%s")
    return cast(LiteralString, _JSON_IDS.sub("json_array_elements_text(%s::json)", sql))


class PgConnection:
    """A psycopg connection with the DB-API surface the store uses of sqlite3's (`execute`, `executemany`,
    `in_transaction`, `commit`, `rollback`), reconnecting after the server dropped it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.raw = self._connect()

    def _connect(self) -> psycopg.Connection:
        raw = psycopg.connect(self.url, autocommit=False, connect_timeout=CONNECT_TIMEOUT_S)
        raw.adapters.register_loader("numeric", _NumberLoader)
        return raw

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor:
        return self.raw.execute(translate(sql), tuple(params))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> psycopg.Cursor:
        cursor = self.raw.cursor()
        rows = [tuple(row) for row in rows]
        if rows:
            cursor.executemany(translate(sql), rows)
        return cursor

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != TransactionStatus.IDLE

    def commit(self) -> None:
        self.raw.commit()

    def rollback(self) -> None:
        """Rolls back; a connection the server dropped is replaced by a new one."""
        if self.raw.broken or self.raw.closed:
            self.raw.close()
            self.raw = self._connect()
            return
        self.raw.rollback()

    def close(self) -> None:
        self.raw.close()


def create_schema(connection: PgConnection) -> None:
    """Creates what is missing, one process at a time (concurrent CREATE IF NOT EXISTS can collide)."""
    connection.execute("SELECT pg_advisory_xact_lock(?)", (SCHEMA_LOCK_KEY,))
    for statement in statements(postgres_ddl(TABLES)):
        connection.execute(statement)
    for table, column, kind in ADDED_COLUMNS:
        connection.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {postgres_ddl(kind)}")
    for statement in statements(INDEXES):
        connection.execute(statement)


def begin_write(connection: PgConnection) -> None:
    """Nothing to send: psycopg opens the transaction (READ COMMITTED) at the first statement."""


def begin_read(connection: PgConnection) -> None:
    """psycopg has just opened the transaction (BEGIN) at this, its first statement."""
    connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")


def lock_devices(connection: PgConnection, device_ids: Iterable[str]) -> None:
    """Locks the devices until the transaction ends, in sorted order (re-locking one held is free)."""
    ids = sorted(set(device_ids))
    if ids:
        connection.execute(
            "SELECT COUNT(pg_advisory_xact_lock(hashtextextended(id, 0))) "
            "FROM (SELECT unnest(?::text[]) AS id ORDER BY 1) AS sorted_ids", (ids,))


_ONE_ROW_INSERT = re.compile(r"^INSERT INTO (\w+) \(([^)]*)\) VALUES \((?:\?, )*\?\)(.*)$", re.DOTALL)
_COLUMN = re.compile(r"\b(\w+) (TEXT|REAL|INTEGER)\b")
_ARRAYS = {"TEXT": ("text[]", str), "REAL": ("float8[]", float), "INTEGER": ("int8[]", int)}


@functools.lru_cache(maxsize=1)
def _column_types() -> dict[tuple[str, str], str]:
    """(table, column) -> its SQLite type name in the schema."""
    types = {}
    for statement in statements(TABLES):
        table = statement.split()[5]  # CREATE TABLE IF NOT EXISTS <table> (
        for column, kind in _COLUMN.findall(statement[statement.index("("):]):
            types[(table, column)] = kind
    return types


@functools.lru_cache(maxsize=64)
def _unnest_insert(sql: str) -> tuple[str, tuple[type, ...]]:
    """The one-row INSERT `sql` as an INSERT of one array per column, and each column's Python type."""
    match = _ONE_ROW_INSERT.match(sql)
    if match is None:
        raise ValueError(f"not a one-row INSERT: {sql[:60]}")
    table, columns, tail = match.groups()
    kinds = [_ARRAYS[_column_types()[(table, column.strip())]] for column in columns.split(",")]
    arrays = ", ".join(f"?::{array}" for array, _ in kinds)
    return f"INSERT INTO {table} ({columns}) SELECT * FROM unnest({arrays}){tail}", tuple(kind for _, kind in kinds)


def insert_rows(connection: PgConnection, sql: str, rows: list[tuple]) -> None:
    """Many rows in one statement of one array parameter per column (`unnest`): PostgreSQL parses and plans
    nine arrays much faster than thousands of parameters."""
    if not rows:
        return
    many, kinds = _unnest_insert(sql)
    columns = [[None if value is None else kind(value) for value in column]
               for column, kind in zip(zip(*rows, strict=True), kinds, strict=True)]
    connection.execute(many, columns)


def pipeline(connection: PgConnection) -> AbstractContextManager[psycopg.Pipeline]:
    """psycopg's pipeline mode: statements are sent without waiting; a result read (or the block's end) syncs."""
    return connection.raw.pipeline()


def has_table(connection: PgConnection, table: str) -> bool:
    row = connection.execute("SELECT to_regclass(?) IS NOT NULL", (table,)).fetchone()
    return row is not None and bool(row[0])  # the SELECT always gives its one row


def analyze(connection: PgConnection) -> None:
    """What autovacuum also does, now, for the table `fleet status` plans on (a state filled in one go has no
    statistics until autovacuum runs, and the planner then scans instead of reading the indexes)."""
    connection.execute("ANALYZE devices")


ENGINE = Engine(name="postgresql", transient_errors=(psycopg.OperationalError,),
                data_errors=(psycopg.DataError, OverflowError), errors=(psycopg.Error,),
                begin_write=begin_write, begin_read=begin_read, lock_devices=lock_devices,
                has_table=has_table, analyze=analyze, insert_rows=insert_rows,
                pipeline=pipeline)
