"""What differs between the fleet state's two engines, behind one small interface, and the store URL.

`edgefleet.monitor.store` is the store interface; `store_sqlite` (the embedded default: one file, one writer
at a time) and `store_postgres` (several monitor processes at once) each provide an `Engine`: how a write
transaction starts, how a device is locked for the rest of the transaction, and which driver errors are
transient (retry later) or mean the message's data cannot be stored.

A store URL is `sqlite:///relative/path`, `sqlite:////absolute/path` (SQLAlchemy's spelling; `~` is
expanded) or `postgresql://user@host:port/dbname?...` (libpq's connection URI; `postgres://` too).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from edgefleet.monitor.errors import FleetStateError

EngineName = Literal["sqlite", "postgresql"]
SQLITE_PREFIX = "sqlite:///"
POSTGRES_SCHEMES = ("postgresql", "postgres")


@dataclass(frozen=True)
class Engine:
    """One engine's behaviour, as plain functions taking the connection first.

    Attributes:
        name: "sqlite" or "postgresql".
        transient_errors: errors after which the same work can succeed later (busy, deadlock, connection
            lost): the batch is rolled back and its messages nacked or retried.
        data_errors: a value of one message the engine cannot store (that message alone is refused).
        errors: every error of the driver.
        begin_write: opens a write transaction unless one is open.
        begin_read: opens a read transaction that sees one consistent snapshot.
        lock_devices: locks devices for the rest of the open write transaction (in a stable order).
        has_table: whether a table exists.
        analyze: refreshes the planner's statistics (after a bulk load or a prune).
        pipeline: a context in which statements whose results are not read are sent without waiting for
            the server (PostgreSQL's pipeline mode; SQLite: nothing to wait for).
        insert_rows: runs a one-row INSERT (`VALUES (?, ...)`, upserts too) for many rows at once, given as a
            list of tuples of distinct keys.
    """

    name: EngineName
    transient_errors: tuple[type[BaseException], ...]
    data_errors: tuple[type[BaseException], ...]
    errors: tuple[type[BaseException], ...]
    begin_write: Callable[[Any], None]
    begin_read: Callable[[Any], None]
    lock_devices: Callable[[Any, Iterable[str]], None]
    has_table: Callable[[Any, str], bool]
    analyze: Callable[[Any], None]
    insert_rows: Callable[[Any, str, list[tuple]], None]
    pipeline: Callable[[Any], AbstractContextManager[Any]]


@dataclass(frozen=True)
class StoreLocation:
    """Where a fleet state lives: an SQLite file, or a PostgreSQL database (its URL)."""

    engine: EngineName
    path: Path | None = None
    url: str | None = None

    @property
    def display(self) -> str:
        """For logs and errors: the file, or the URL without its password."""
        return str(self.path) if self.engine == "sqlite" else redact(self.url or "")


def redact(url: str) -> str:
    """`url` with any password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def parse_store_url(url: str) -> StoreLocation:
    """The location a store URL names.

    Raises:
        FleetStateError: not an sqlite:/// or postgresql:// URL.
    """
    if url.startswith(SQLITE_PREFIX) and len(url) > len(SQLITE_PREFIX):
        return StoreLocation("sqlite", path=Path(url[len(SQLITE_PREFIX):]).expanduser())
    if urlsplit(url).scheme in POSTGRES_SCHEMES:
        return StoreLocation("postgresql", url=url)
    raise FleetStateError(f"store URL {redact(url)!r} names no engine this monitor knows",
                          "write sqlite:///relative/file.sqlite, sqlite:////absolute/file.sqlite or "
                          "postgresql://user@host:5432/dbname")


def transient_store_errors() -> tuple[type[BaseException], ...]:
    """Transient errors of every engine whose driver is installed (the service resubscribes after them)."""
    errors: tuple[type[BaseException], ...] = (sqlite3.OperationalError,)
    try:
        import psycopg
    except ImportError:  # the PostgreSQL driver is optional (an SQLite-only monitor does not need it)
        return errors
    return (*errors, psycopg.OperationalError)
