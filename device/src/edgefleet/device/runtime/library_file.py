"""Which file a libedgetpu name is: the probe keys its outcomes by it, and a process refuses to open a library
whose file changed since it loaded it (interpreter.py). No import of the runtime: the probe and the interpreter
both use it."""

from __future__ import annotations

import ctypes.util
import os
from pathlib import Path

# Where Coral's packages and the community rebuilds install libedgetpu (besides the loader's own search).
LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib/arm-linux-gnueabihf",
                "/usr/lib", "/usr/local/lib", "/lib")

def locate_library(library: str) -> Path | None:
    """The file `library` names: a path as given, else the first match in LD_LIBRARY_PATH and the usual dirs."""
    if os.sep in library:
        path = Path(library)
        return path if path.exists() else None
    dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if d] + list(LIBRARY_DIRS)
    for directory in dirs:
        candidate = Path(directory) / library
        if candidate.exists():
            return candidate
    found = ctypes.util.find_library(library.removeprefix("lib").split(".so")[0])
    return Path(found) if found else None  # in the loader cache (ldconfig): dlopen finds it by name


def library_file(library: str) -> tuple[str, int] | None:
    """The file `library` names now, as (resolved path, mtime in ns); None when it is not found."""
    located = locate_library(library)
    if located is None:
        return None
    try:
        real = located.resolve()
        return str(real), real.stat().st_mtime_ns
    except OSError:
        return None
