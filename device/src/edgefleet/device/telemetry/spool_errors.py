"""What an SQLite failure on the telemetry spool means, what the user can do about it, and setting a corrupt
spool aside (`quarantine`). `edgefleet.device.telemetry.spool` raises what `spool_error` builds.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from edgefleet.kernel.errors import TelemetryError

# SQLite's result codes (sqlite3.h) for the failures a user can act on.
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_READONLY = 8
_SQLITE_IOERR = 10
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_CANTOPEN = 14
_SQLITE_NOTADB = 26


def _primary_code(error: sqlite3.Error) -> int | None:
    code = getattr(error, "sqlite_errorcode", None)
    return code & 0xFF if code is not None else None


def _says_corrupt(error: sqlite3.Error) -> bool:
    text = str(error).lower()
    return _primary_code(error) in (_SQLITE_CORRUPT, _SQLITE_NOTADB) or "not a database" in text or "malformed" in text


def is_corrupt(error: BaseException | None) -> bool:
    """True for SQLite's "the file is damaged or not a database"."""
    return isinstance(error, sqlite3.DatabaseError) and _says_corrupt(error)


def is_full(error: sqlite3.Error) -> bool:
    """True when the database hit its size bound or the disk is full."""
    return _primary_code(error) == _SQLITE_FULL or "disk is full" in str(error).lower()


def _unwritable_fix(path: Path) -> str:
    return f"make {path.parent} an existing, writable directory for the agent user, or move the agent root"


def error_fix(path: Path, error: sqlite3.Error) -> str:
    """What the user can do about an SQLite error on the spool at `path`."""
    primary = _primary_code(error)
    if is_full(error):
        return (
            f"free disk space on the filesystem holding {path.parent}, or lower "
            "telemetry.spool_max_messages / telemetry.spool_max_mb"
        )
    if _says_corrupt(error):
        return (
            f"move {path} aside (its unsent telemetry is lost) and restart the agent; it creates a new spool"
        )
    if primary in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return f"another process holds {path}: stop the other agent, or give each agent its own spool path"
    if primary in (_SQLITE_CANTOPEN, _SQLITE_READONLY, _SQLITE_IOERR) or "unable to open" in str(error).lower():
        return _unwritable_fix(path)
    return f"check the disk holding {path}; if the file is damaged, move it aside and restart the agent"


def spool_error(path: Path, action: str, error: sqlite3.Error | OSError) -> TelemetryError:
    """The TelemetryError for `action` on the spool at `path` failing with `error`."""
    fix = error_fix(path, error) if isinstance(error, sqlite3.Error) else _unwritable_fix(path)
    return TelemetryError(f"telemetry spool {path}: {action} failed: {error}", fix)


def quarantine(path: Path) -> Path:
    """Renames a corrupt spool (and its WAL files) to `<name>.corrupt-<utc time>`; returns the new path."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        source = path.with_name(path.name + suffix)
        if source.exists():
            os.replace(source, target.with_name(target.name + suffix))
    return target
