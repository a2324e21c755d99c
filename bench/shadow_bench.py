"""The shadow wave's cost to the primary loop (issue 25): the agent's frame rate with a shadow candidate at
share 0.1 and 0.5, against the same agent without one, measured in the same run.

One agent runs the whole measure; its shadow sampler alternates between off and a share in adjacent windows
(a loaded machine's load changes slowly next to a 1 s window), and each share's window is compared with the
off window just before it. The candidate is the primary's own model released as another version (the same
cost per frame: the worst case for a share; a smaller candidate costs less). Both run on the CPU here (1
thread each); 640x480 frames are prepared per frame by the capture stage as a camera's would be (the candidate
reuses the primary's tensor: same input). Telemetry goes to the local JSONL sink in mode `summary` (each window
carries `inference.shadow`). Two models: MobileNet v1 0.25 (TPU-class speed, where the loop's own Python
overhead shows) and MobileNet v2 (a CPU-bound primary).

Run: `python -m bench.shadow_bench [--window S] [--reps N] [--models v1-0.25,v2]` (needs
../shared/coral-test-data, or EDGEFLEET_CORAL_TEST_DATA).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.agent_bench import FRAME_SIZE, bench_frames, signed_store
from edgefleet.device.agent.config import load_config
from edgefleet.device.agent.loop import Agent
from edgefleet.device.agent.shadow import set_shadow
from edgefleet.device.agent.shadow_stats import ShareSampler

MODELS = {"v1-0.25": "mobilenet_v1_0.25_128_quant.tflite", "v2": "mobilenet_v2_1.0_224_quant.tflite"}
SHARES = (0.0, 0.1, 0.5)
QUEUE_SETTLE_S = 0.2
WARMUP_FRAMES = 20
START_TIMEOUT_S = 60.0
console = Console(width=160)


def make_store(work: Path, model_file: str) -> Path:
    """An agent root with the model as 1.0.0 (current) and again as 1.1.0 (the shadow candidate)."""
    root = work / "root"
    store = signed_store(work, root, model_file, ("1.0.0", "1.1.0"), "shadow")
    set_shadow(store, "imagenet", "1.1.0")
    bench_frames(work)
    return root


def agent_config(work: Path, root: Path, share: float):  # -> AgentConfig
    path = work / f"agent-{share:g}.yaml"
    path.write_text(
        f"device_id: bench-shadow\nmodel: imagenet\nroot: {root}\n"
        f"source: {{kind: images, path: {work / 'frames'}, frame_width: {FRAME_SIZE[0]}, "
        f"frame_height: {FRAME_SIZE[1]}}}\n"
        "telemetry: {mode: summary, summary_interval_s: 1.0}\n"
        f"shadow: {{share: {share}, report_interval_s: 1.0}}\n")
    return load_config(path)


def started(work: Path, root: Path) -> tuple[Agent, threading.Event, threading.Thread]:
    """One agent, its shadow thread running (config share 1), the candidate loaded, warmed up."""
    agent = Agent(agent_config(work, root, 1.0))
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while (agent.stats.frames < WARMUP_FRAMES or agent.shadow.candidate is None) and time.monotonic() < deadline:
        time.sleep(0.05)
    if agent.shadow.candidate is None:
        raise RuntimeError(f"the shadow candidate did not load: {agent.shadow.error}")
    return agent, stop, thread


def window(agent: Agent, share: float, seconds: float) -> tuple[float, int]:
    """(primary fps, candidate pairs) over `seconds` at `share` (the same agent: only the sampler changes)."""
    agent.shadow.sampler = ShareSampler(share)
    time.sleep(QUEUE_SETTLE_S)  # the frames queued at the previous share are done
    tally = agent.shadow.tally
    pairs, frames, start = tally.total().frames if tally else 0, agent.stats.frames, time.perf_counter()
    time.sleep(seconds)
    elapsed = time.perf_counter() - start
    tally = agent.shadow.tally
    return (agent.stats.frames - frames) / elapsed, (tally.total().frames if tally else 0) - pairs


def bench_model(label: str, model_file: str, window_s: float, reps: int) -> list[dict]:
    """Windows off, 0.1, off, 0.5, ... in one agent; each share's fps against the off windows beside it."""
    with tempfile.TemporaryDirectory(prefix="shadow-bench-") as tmp:
        work = Path(tmp)
        agent, stop, thread = started(work, make_store(work, model_file))
        try:
            runs = {share: [] for share in SHARES}
            for _ in range(reps):
                for share in SHARES[1:]:
                    off = window(agent, 0.0, window_s)
                    on = window(agent, share, window_s)
                    runs[0.0].append(off)
                    runs[share].append((on, off))
            dropped = agent.shadow.dropped
        finally:
            stop.set()
            thread.join(30)
    rows = []
    for share in SHARES[1:]:
        ratios = [on[0] / off[0] for on, off in runs[share] if off[0] > 0]
        rows.append({"model": label, "share": share, "off_fps_median": statistics.median(o[0] for _, o in runs[share]),
                     "fps_median": statistics.median(on[0] for on, _ in runs[share]),
                     "ratio_median": statistics.median(ratios), "ratio_q1": statistics.quantiles(ratios, n=4)[0],
                     "ratio_q3": statistics.quantiles(ratios, n=4)[2],
                     "pairs_per_s": statistics.median(on[1] / window_s for on, _ in runs[share]), "dropped": dropped})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=1.0, help="seconds per window")
    parser.add_argument("--reps", type=int, default=20, help="(off, on) window pairs per share")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated: " + ", ".join(MODELS))
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    rows = [row for label in args.models.split(",")
            for row in bench_model(label, MODELS[label], args.window, args.reps)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(title=f"Shadow cost to the primary loop: fps with the shadow / fps without, one agent, "
                        f"{args.reps} pairs of adjacent {args.window:g} s windows per share")
    for column in ("model", "share", "fps off (median)", "fps on (median)", "ratio median", "ratio q1..q3",
                   "pairs/s", "dropped (run)"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["model"], f"{row['share']:g}", f"{row['off_fps_median']:.1f}", f"{row['fps_median']:.1f}",
                      f"{row['ratio_median']:.3f}", f"{row['ratio_q1']:.3f}..{row['ratio_q3']:.3f}",
                      f"{row['pairs_per_s']:.1f}", str(row["dropped"]))
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
