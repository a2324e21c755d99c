"""`make sandbox` start-up benchmark (issue 16): time from `sandbox up` to its printed summary, and to stop.

Starts the sandbox as the Makefile does (a subprocess, 3 devices, any free port), on a fresh workdir (the
first start after setup: Prefect migrates a new database, the release key and sample frames are made) and
again on the same workdir (a restart), each on a quiet machine and with a busy loop on every core (the CI
machines' load). Every start includes the `deploy-agent` run (wheel built, installed on every device) and
the `fleet-monitor` run. Then Ctrl-C (SIGINT to its process group) and the time until it exited 0.
Goal: ready in under 120 s everywhere.

Run: `python -m bench.sandbox_bench [--devices N] [--no-busy]` (needs sshd and Java; about 5 minutes).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.canary_bench import busy_loops

GOAL_S = 120.0
TIMEOUT_S = 600.0
UI_URL_LABEL = "Prefect UI:"
REPO = Path(__file__).resolve().parents[1]


def start_and_stop(workdir: Path, devices: int) -> tuple[float, float]:
    """(seconds to the summary, seconds from Ctrl-C to exit 0) of one sandbox."""
    out = workdir.parent / f"{workdir.name}-{time.monotonic_ns()}.out"
    started = time.monotonic()
    with open(out, "wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "edgefleet.local.sandbox", "up", "--workdir", str(workdir), "--port", "0",
             "--devices", str(devices), "--no-schedules"],
            cwd=REPO, stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while UI_URL_LABEL not in out.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() - started > TIMEOUT_S:
                raise RuntimeError(f"the sandbox did not start:\n{out.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        ready = time.monotonic() - started
        stopping = time.monotonic()
        os.killpg(process.pid, signal.SIGINT)
        status = process.wait(timeout=TIMEOUT_S)
        if status != 0:
            raise RuntimeError(f"the sandbox exited {status}:\n{out.read_text(errors='replace')[-3000:]}")
        return ready, time.monotonic() - stopping
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=3)
    parser.add_argument("--no-busy", action="store_true", help="skip the runs under a busy loop per core")
    args = parser.parse_args(argv or [])
    rows = []
    for busy in (False,) if args.no_busy else (False, True):
        with tempfile.TemporaryDirectory(prefix="edgefleet-sandbox-bench-") as temp, busy_loops(busy) as loops:
            workdir = Path(temp) / "sandbox"
            for label in ("fresh workdir", "restart"):
                ready, stop = start_and_stop(workdir, args.devices)
                rows.append((f"{label}, {loops} busy loops", ready, stop))
    print(f"sandbox with {args.devices} devices on {os.cpu_count()} cores (goal: ready < {GOAL_S:.0f} s)")
    for label, ready, stop in rows:
        print(f"  {label:<28} ready {ready:6.1f} s   stopped {stop:5.1f} s after Ctrl-C")
    worst = max(ready for _, ready, _ in rows)
    print(f"  worst {worst:.1f} s: {'OK' if worst < GOAL_S else 'OVER THE GOAL'}")
    return 0 if worst < GOAL_S else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
