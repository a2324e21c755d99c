"""The end of a simulation benchmark's run: the table of its rows, the run's wall time, and what it measured
kept as JSON (`--out`)."""

from __future__ import annotations

import json
import time


def finish(table: str, started: float, out: str | None, kept: object) -> int:
    """Prints `table` and the seconds since `started` (a `time.monotonic()` reading), writes `kept` to `out`
    as indented JSON when `out` is given; returns the run's exit status (0)."""
    print(table)  # noqa: T201
    print(f"({time.monotonic() - started:.0f} s)")  # noqa: T201
    if out:
        with open(out, "w") as handle:
            json.dump(kept, handle, indent=2)
    return 0
