"""Where the agent's frequently rewritten small files live (issue 24, item 3): `status.json` and `shadow.json`.

On an SD card every rewrite is a flash write. Under deploy-agent's systemd unit (`RuntimeDirectory=`), systemd
gives the agent a directory on /run, a tmpfs, and says where in `$RUNTIME_DIRECTORY`: the agent writes these
files there. Without one (the demo, the tests, devices without systemd) they stay in the agent root.

Readers never need to know which: they read `<root>/<name>` (`reader_path`). When the files live in a runtime
directory, the agent points `<root>/<name>` at its runtime copy with a symlink when it starts (`link_runtime_files`,
one metadata write per start), replacing whatever was there: a status.json an older agent left in the root is
gone before the new agent's first status, never read as the live one. After a reboot (/run emptied) the link
dangles until the agent runs again: a reader finds no status, which is the truth. Nothing that must survive a
reboot goes there (the spool, the store, keys stay in the root).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from edgefleet.device.agent.shadow_stats import SHADOW_REPORT_FILE
from edgefleet.kernel.contracts.layout import STATUS_FILE
from edgefleet.kernel.errors import EdgefleetError
from edgefleet.kernel.fsutil import switch_symlink

RUNTIME_DIRECTORY_ENV = "RUNTIME_DIRECTORY"
"""Set by systemd (240+) for a unit with `RuntimeDirectory=`: the directories' full paths, ':'-separated."""

RUNTIME_FILES = (STATUS_FILE, SHADOW_REPORT_FILE)
"""The files the agent rewrites every few seconds; all of them readable again by a process restarted at once."""


def systemd_runtime_dir(environ: Mapping[str, str]) -> Path | None:
    """The unit's runtime directory from `environ` (the first, when the unit names several), or None."""
    first = environ.get(RUNTIME_DIRECTORY_ENV, "").split(":", 1)[0].strip()
    return Path(first) if first else None


def reader_path(root: Path, name: str) -> Path:
    """Where any reader finds the agent's runtime file `name` (`status.json`, `shadow.json`): `<root>/<name>`,
    the file itself or the agent's link to its copy in the runtime directory."""
    return root / name


def link_runtime_files(root: Path, runtime_dir: Path) -> None:
    """Makes `<root>/<name>` lead readers to the runtime copy of each runtime file: a symlink to
    `<runtime_dir>/<name>` (replacing an old file left there), or, when the files live in the root itself, no
    symlink (one left by an earlier run under systemd is removed: the agent writes the file there now).

    Raises:
        EdgefleetError: the root's entry cannot be replaced (a directory in its place).
    """
    runtime_dir.mkdir(parents=True, exist_ok=True)
    same = runtime_dir.resolve() == root.resolve()
    for name in RUNTIME_FILES:
        entry = reader_path(root, name)
        try:
            if same:
                if entry.is_symlink():
                    entry.unlink()
            else:
                switch_symlink(entry, str((runtime_dir / name).absolute()))
        except OSError as error:
            raise EdgefleetError(
                f"cannot point {entry} at the agent's runtime copy {runtime_dir / name}: {error.strerror}",
                f"remove {entry} (only the agent writes it) and start the agent again") from error


def runtime_dir_from_environment() -> Path | None:
    """`$RUNTIME_DIRECTORY` of this process: the default of the config's `runtime_dir`."""
    return systemd_runtime_dir(os.environ)
