"""The shadow wave's cost to the primary loop (issue 25): the agent's frame rate with a shadow candidate at
share 0.1 and 0.5, against the same agent without one, measured in the same run in interleaved windows (each
rep runs every share once, in turn, so a machine whose load changes weighs on all of them alike).

The candidate is the primary's own model released as another version (the same cost per frame: the worst case
for a share; a smaller candidate costs less). Both run on the CPU here (1 thread each); 640x480 frames are
prepared per frame by the capture stage as a camera's would be. Telemetry goes to the local JSONL sink in mode
`summary` (each window carries `inference.shadow`). Two models: MobileNet v1 0.25 (TPU-class speed, where the
loop's own overhead shows) and MobileNet v2 (a CPU-bound primary).

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

from bench.agent_bench import CORAL, FRAME_SIZE, IMAGES
from edgefleet.device.agent.config import load_config
from edgefleet.device.agent.loop import Agent
from edgefleet.device.agent.shadow import set_shadow
from edgefleet.device.runtime.engine import Engine
from edgefleet.device.runtime.golden import compute_golden
from edgefleet.device.store import ModelStore
from edgefleet.flows.release.bundle import create_version_dir
from edgefleet.kernel.signing import generate_keypair, save_public_key

MODELS = {"v1-0.25": "mobilenet_v1_0.25_128_quant.tflite", "v2": "mobilenet_v2_1.0_224_quant.tflite"}
SHARES = (0.0, 0.1, 0.5)
WARMUP_FRAMES = 20
START_TIMEOUT_S = 60.0
console = Console(width=160)


def make_store(work: Path, model_file: str) -> Path:
    """An agent root with the model as 1.0.0 (current) and again as 1.1.0 (the shadow candidate)."""
    private_key, public_key = generate_keypair()
    root = work / "root"
    save_public_key(public_key, root / "keys" / "release.pub")
    store = ModelStore(root, public_key=public_key)
    with Engine.open(CORAL / model_file) as engine:
        golden = compute_golden(engine, (1, 2))
    for version in ("1.0.0", "1.1.0"):
        release = work / f"release-{version}"
        create_version_dir(release, {"model_cpu.tflite": CORAL / model_file,
                                     "labels.txt": CORAL / "imagenet_labels.txt"},
                           private_key=private_key, model="imagenet", version=version, golden=golden)
        store.install(release)
    store.activate("imagenet", "1.0.0")
    set_shadow(store, "imagenet", "1.1.0")
    frames = work / "frames"
    frames.mkdir()
    for name in IMAGES:
        (frames / name).write_bytes((CORAL / name).read_bytes())
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


def measure(work: Path, root: Path, share: float, window_s: float) -> tuple[float, int, int]:
    """(primary fps over the window, pairs the candidate made in it, sampled frames dropped) of one agent run."""
    agent = Agent(agent_config(work, root, share))
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while agent.stats.frames < WARMUP_FRAMES and time.monotonic() < deadline:
        time.sleep(0.05)
    pairs_before = agent.shadow.tally.total().frames if agent.shadow.tally else 0
    frames, start = agent.stats.frames, time.perf_counter()
    time.sleep(window_s)
    fps = (agent.stats.frames - frames) / (time.perf_counter() - start)
    pairs = (agent.shadow.tally.total().frames if agent.shadow.tally else 0) - pairs_before
    dropped = agent.shadow.dropped
    stop.set()
    thread.join(30)
    return fps, pairs, dropped


def bench_model(label: str, model_file: str, window_s: float, reps: int) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="shadow-bench-") as tmp:
        work = Path(tmp)
        root = make_store(work, model_file)
        runs: dict[float, list[tuple[float, int, int]]] = {share: [] for share in SHARES}
        for _ in range(reps):
            for share in SHARES:
                runs[share].append(measure(work, root, share, window_s))
    baseline = [fps for fps, _, _ in runs[0.0]]
    rows = []
    for share in SHARES:
        ratios = [fps / base for (fps, _, _), base in zip(runs[share], baseline, strict=True) if base > 0]
        rows.append({"model": label, "share": share, "fps_median": statistics.median(f for f, _, _ in runs[share]),
                     "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
                     "pairs_per_s": statistics.median(p / window_s for _, p, _ in runs[share]),
                     "dropped": sum(d for _, _, d in runs[share])})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=5.0, help="seconds measured per agent run")
    parser.add_argument("--reps", type=int, default=3, help="rounds of every share, interleaved")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated: " + ", ".join(MODELS))
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    rows = [row for label in args.models.split(",")
            for row in bench_model(label, MODELS[label], args.window, args.reps)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(title=f"Shadow cost to the primary loop (fps ratio to no shadow, same run; {args.reps} reps x "
                        f"{args.window:g} s, interleaved)")
    for column in ("model", "share", "primary fps (median)", "ratio median", "ratio min..max", "pairs/s", "dropped"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["model"], f"{row['share']:g}", f"{row['fps_median']:.1f}", f"{row['ratio_median']:.3f}",
                      f"{row['ratio_min']:.3f}..{row['ratio_max']:.3f}", f"{row['pairs_per_s']:.1f}",
                      str(row["dropped"]))
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
