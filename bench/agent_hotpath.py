"""The device hot path (issue 24), as ratios against baselines measured in the same run, interleaved.

1. Loop / raw `invoke()` at Edge TPU speed (mobilenet_v1_0.25_128_quant) and at MobileNet v2 speed, with
   telemetry summaries and with a message per inference: 640x480 frames, each preprocessed per frame as a
   camera's would be. Windows alternate, loop and raw (the agent's source paused meanwhile, so its threads
   idle), `--reps` times; the ratio is the median of the per-pair ratios, so a shared machine's load (which
   moves both) cancels out as far as it can.
   Beside it (not instead of it), the same loop and baseline on an Edge TPU STAND-IN (`bench.accelerator_standin`):
   `invoke()` waits Coral's published 2.6 ms for MobileNet v2 with the GIL released and computes nothing, so the
   CPU is free during inference as with a real USB/PCIe Edge TPU. The CPU stand-in above takes one of this
   machine's two cores for `invoke()`, which the loop's other stages then compete for; the Edge TPU stand-in
   shows what the loop's own work costs when the accelerator does the inference.
2. The spool's SQLite transactions and bytes written per second at 30 and 300 inferences/s in each
   telemetry mode, the default (batched by time) against the writer unbatched (`flush_interval_s` 1 ms: a
   transaction per record or so, like the writer before issue 24). Messages go to a sink that acknowledges
   everything and writes nothing, so only the spool's I/O is counted.
3. `edgefleet-agent run`'s resident memory and CPU per frame with MobileNet v2, in its own process, and what
   the resident memory is made of (a fresh interpreter importing and opening one part after another).

Run: `python -m bench.agent_bench --only hotpath [--window S] [--reps N]`.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from bench import accelerator_standin
from edgefleet.device.agent.config import load_config
from edgefleet.device.agent.loop import Agent
from edgefleet.device.runtime.engine import Engine
from edgefleet.device.runtime.golden import compute_golden
from edgefleet.device.runtime.interpreter import Interpreter
from edgefleet.device.store import ModelStore
from edgefleet.device.telemetry.config import TelemetryConfig
from edgefleet.device.telemetry.service import TelemetryService
from edgefleet.device.telemetry.sinks import PublishOutcome
from edgefleet.device.telemetry.spool import SpoolEntry
from edgefleet.flows.release.bundle import create_version_dir
from edgefleet.kernel.contracts.status import read_status
from edgefleet.kernel.contracts.telemetry import ModelRef, ResultItem
from edgefleet.kernel.errors import EdgefleetError
from edgefleet.kernel.trust.signatures import generate_keypair, save_public_key

TPU_SPEED_MODEL = "mobilenet_v1_0.25_128_quant.tflite"
V2_MODEL = "mobilenet_v2_1.0_224_quant.tflite"
FRAME_SIZE = (640, 480)
IMAGES = ("cat.bmp", "parrot.jpg", "grace_hopper.bmp", "bird.bmp")
LOOP_GOALS = {(TPU_SPEED_MODEL, "summary"): 0.95, (TPU_SPEED_MODEL, "every"): 0.85,
              (V2_MODEL, "summary"): 0.97, (V2_MODEL, "every"): 0.97}
SPOOL_RATES = (30, 300)
SPOOL_GOAL_TX_S = 2.0
UNBATCHED_FLUSH_S = 0.001
SPOOL_WARMUP_S = 2.5
STATUS_S = 0.5  # the measured agent's status interval: its frame count is read from status.json
PROCESS_WINDOW_S = 10.0
INVOKE_CPU_S = 2.0  # raw invoke() measured this long for its CPU per inference
IDLE_S = 0.3  # after pausing or resuming the source, before a window starts
MODEL_REF = ModelRef(name="imagenet", version="1.0.0", variant="cpu", backend="cpu")
Row = tuple[str, str, str, str]


class GatedSource:
    """640x480 frames cycled, each handed out as a new array view (prepared per frame, nothing cached), paused
    while the baseline runs."""

    def __init__(self, frames: Sequence[np.ndarray]) -> None:
        self._frames = frames
        self.gate = threading.Event()
        self.gate.set()

    def frames(self) -> Iterator[np.ndarray]:
        for frame in itertools.cycle(self._frames):
            self.gate.wait()
            yield frame

    def close(self) -> None:
        self.gate.set()


class NullSink:
    """Acknowledges every message and writes nothing: only the spool's I/O is counted."""

    destination = "null"
    max_batch_wait_s = 0.0

    def publish_batch(self, entries: Sequence[SpoolEntry]) -> PublishOutcome:
        return PublishOutcome(acked=[entry.seq for entry in entries])

    def close(self) -> None:
        pass


def frames_640x480(coral: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(coral / name).convert("RGB").resize(FRAME_SIZE)) for name in IMAGES]


def config_path(work: Path, name: str) -> Path:
    return work / f"{name}.yaml"


def agent_config(coral: Path, work: Path, name: str, model_file: str, mode: str,  # noqa: ANN201
                 extra: str = ""):
    """A signed release of `model_file` installed and active in a fresh device store; the agent's config."""
    private_key, public_key = generate_keypair()
    root = work / name
    save_public_key(public_key, root / "keys" / "release.pub")
    store = ModelStore(root, public_key=public_key)
    with Engine.open(coral / model_file) as engine:
        golden = compute_golden(engine, (1, 2))
    release = work / f"{name}-release"
    create_version_dir(release, {"model_cpu.tflite": coral / model_file, "labels.txt": coral / "imagenet_labels.txt"},
                       private_key=private_key, model="imagenet", version="1.0.0", golden=golden)
    store.install(release)
    store.activate("imagenet", "1.0.0")
    path = config_path(work, name)
    path.write_text(f"device_id: bench-{name}\nmodel: imagenet\nroot: {root}\ninference: {{device: cpu}}\n"
                    f"telemetry: {{mode: {mode}}}\n{extra}")
    return load_config(path)


def raw_invoke_fps(interpreter: Interpreter, seconds: float) -> tuple[float, float]:
    """invoke() per second on a ready input, and its CPU microseconds per invoke."""
    count, start, cpu = 0, time.perf_counter(), time.thread_time()
    while time.perf_counter() - start < seconds:
        interpreter.invoke()
        count += 1
    return count / (time.perf_counter() - start), (time.thread_time() - cpu) / max(count, 1) * 1e6


def raw_interpreter(coral: Path, model_file: str) -> Interpreter:
    interpreter = Interpreter(model_path=str(coral / model_file), num_threads=1)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    return interpreter


STAGES = ("inference", "capture", "telemetry-writer", "telemetry-publisher")


def thread_cpu_s() -> dict[str, float]:
    """CPU seconds of this process's threads by name (Linux schedstat: ns of run time, whatever the load)."""
    times: dict[str, float] = {}
    for thread in threading.enumerate():
        try:
            run_ns = int(Path(f"/proc/self/task/{thread.native_id}/schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        times[thread.name] = times.get(thread.name, 0.0) + run_ns / 1e9
    return times


def loop_fps(agent: Agent, seconds: float) -> tuple[float, dict[str, float]]:
    """Frames per second over `seconds`, and each stage's CPU microseconds per frame."""
    frames, cpu, start = agent.stats.frames, thread_cpu_s(), time.perf_counter()
    time.sleep(seconds)
    frames, after = agent.stats.frames - frames, thread_cpu_s()
    per_frame = {name: (after[name] - cpu.get(name, 0.0)) / max(frames, 1) * 1e6 for name in STAGES if name in after}
    return frames / (time.perf_counter() - start), per_frame


class RunningAgent:
    """An agent on a gated source, started and stopped around a `with` block."""

    _names = itertools.count(1)

    def __init__(self, coral: Path, work: Path, model_file: str, mode: str) -> None:
        name = f"{Path(model_file).stem[:14]}-{mode}-{next(self._names)}"
        self.source = GatedSource(frames_640x480(coral))
        self.agent = Agent(agent_config(coral, work, name, model_file, mode), source=self.source)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.agent.run, args=(self._stop,), daemon=True)

    def __enter__(self) -> RunningAgent:
        self._thread.start()
        deadline = time.monotonic() + 120
        while self.agent.stats.frames < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.source.gate.set()
        self._stop.set()
        self._thread.join(60)


def bench_loop_ratio(coral: Path, work: Path, model_file: str, mode: str, window_s: float, reps: int) -> Row:
    """Loop / raw invoke(), interleaved windows (ABBA), the median of the per-pair ratios."""
    interpreter = raw_interpreter(coral, model_file)
    ratios, loops, raws, raw_cpu, stage_cpu = [], [], [], [], []
    with RunningAgent(coral, work, model_file, mode) as running:
        for rep in range(reps):
            for part in (("raw", "loop") if rep % 2 == 0 else ("loop", "raw")):
                running.source.gate.set() if part == "loop" else running.source.gate.clear()
                time.sleep(IDLE_S)
                if part == "raw":
                    fps, cpu_us = raw_invoke_fps(interpreter, window_s)
                    raws.append(fps)
                    raw_cpu.append(cpu_us)
                else:
                    fps, stages = loop_fps(running.agent, window_s)
                    loops.append(fps)
                    stage_cpu.append(stages)
            ratios.append(loops[-1] / raws[-1])
        lost = running.agent.telemetry.stats().queue_dropped
    ratio, goal = statistics.median(ratios), LOOP_GOALS[(model_file, mode)]
    label = "summaries" if mode == "summary" else "a message per inference"
    stages = ", ".join(f"{name} {statistics.median(s.get(name, 0.0) for s in stage_cpu):.0f}"
                       for name in STAGES)
    return (f"loop / raw invoke(), {Path(model_file).stem}, {label}",
            f"{statistics.median(loops):.0f} fps / {statistics.median(raws):.0f} /s",
            f"{ratio:.2f}x (pairs {min(ratios):.2f}-{max(ratios):.2f}, n={reps})",
            f"goal >= {goal}x: {'met' if ratio >= goal else 'NOT met'}"
            + (f"; {lost} records dropped before the spool" if lost else "")
            + f"\nCPU us/frame: raw invoke {statistics.median(raw_cpu):.0f}; {stages}")


def _io_counters() -> dict[str, int]:
    lines = Path("/proc/self/io").read_text().splitlines()
    return {key: int(value) for key, value in (line.split(": ") for line in lines)}


def bench_spool_io(work: Path, mode: str, rate: int, flush_interval_s: float, seconds: float) -> Row:
    """SQLite transactions and bytes written per second while `rate` inferences/s are recorded."""
    config = TelemetryConfig(mode=mode, flush_interval_s=flush_interval_s)
    path = work / f"spool-{mode}-{rate}-{flush_interval_s}.sqlite"
    service = TelemetryService(config, path, "bench-spool", sink=NullSink()).start()
    commits = [0]

    def trace(statement: str) -> None:
        if statement.startswith("COMMIT"):
            commits[0] += 1

    service._spool._conn.set_trace_callback(trace)  # noqa: SLF001 - the benchmark counts the spool's commits
    results = (ResultItem(id=89, label="macaw", score=0.99), ResultItem(id=88, label="parrot", score=0.01))
    due = time.perf_counter()
    warm_until = due + SPOOL_WARMUP_S  # `started` is spooled and acknowledged meanwhile: not the steady state
    before = start = None
    while start is None or time.perf_counter() - start < seconds:
        if start is None and time.perf_counter() >= warm_until:
            before, start, commits[0] = _io_counters(), time.perf_counter(), 0
        service.record_inference(MODEL_REF, 2.5, results)
        due += 1.0 / rate
        time.sleep(max(0.0, due - time.perf_counter()))
    elapsed = time.perf_counter() - start
    after, transactions = _io_counters(), commits[0]
    service.stop(10.0)
    written = after["write_bytes"] - before["write_bytes"] or after["wchar"] - before["wchar"]  # type: ignore[index]
    tx_s = transactions / elapsed
    batched = flush_interval_s != UNBATCHED_FLUSH_S
    return (f"spool, {mode}, {rate} inferences/s, " + (f"batched ({flush_interval_s:g} s)" if batched
                                                        else "unbatched (baseline)"),
            f"{tx_s:.1f} transactions/s", f"{written / elapsed / 1024:.0f} kB/s written",
            (f"goal <= {SPOOL_GOAL_TX_S:g}/s: {'met' if tx_s <= SPOOL_GOAL_TX_S else 'NOT met'}" if batched else ""))


def _process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _process_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _frames(config) -> int:  # noqa: ANN001
    try:
        return read_status(config.status_path).frames
    except EdgefleetError:
        return 0


def bench_agent_process(coral: Path, work: Path, window_s: float) -> list[Row]:
    """CPU per frame and resident memory of `edgefleet-agent run` with MobileNet v2, in its own process, on
    640x480 frames (decoded once, prepared per frame), telemetry to the local sink."""
    frames = work / "frames"
    frames.mkdir(exist_ok=True)
    for name in IMAGES:
        shutil.copy(coral / name, frames / name)
    rows = []
    invoke_ms = raw_invoke_fps(raw_interpreter(coral, V2_MODEL), INVOKE_CPU_S)[1] / 1000
    for mode in ("summary", "every"):
        source = (f"source: {{kind: images, path: {frames}, frame_width: {FRAME_SIZE[0]}, "
                  f"frame_height: {FRAME_SIZE[1]}}}\nstatus: {{interval_s: {STATUS_S}}}\n")
        config = agent_config(coral, work, f"process-{mode}", V2_MODEL, mode, extra=source)
        process = subprocess.Popen([sys.executable, "-c", "from edgefleet.device.cli import app; app()", "run",
                                    "--config", str(config_path(work, f"process-{mode}"))],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while _frames(config) == 0 and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(1.0)
            frames0, cpu0 = _frames(config), _process_cpu_s(process.pid)
            time.sleep(window_s)
            count, cpu = _frames(config) - frames0, _process_cpu_s(process.pid) - cpu0
            rss = _process_rss_mb(process.pid)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
        per_frame_ms = cpu / max(count, 1) * 1000
        rows.append((f"edgefleet-agent run, {Path(V2_MODEL).stem}, {mode}",
                     f"{per_frame_ms:.2f} ms CPU/frame ({count / window_s:.0f} fps)",
                     f"RSS {rss:.0f} MB",
                     f"report; of the CPU/frame, invoke() on the CPU ~{invoke_ms:.2f} ms (raw, same run), the "
                     f"agent's own work ~{max(per_frame_ms - invoke_ms, 0.0):.2f} ms"))
    return rows


_RSS_PARTS = r"""
import json, sys
from pathlib import Path
def rss():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
parts = [("python", rss())]
import numpy, PIL.Image; parts.append(("numpy + pillow", rss()))
import ai_edge_litert.interpreter; parts.append(("the LiteRT runtime (ai-edge-litert)", rss()))
import pydantic, pydantic_settings; parts.append(("pydantic + pydantic-settings", rss()))
import cryptography.hazmat.primitives.asymmetric.ed25519, ssl; parts.append(("cryptography + ssl", rss()))
import edgefleet.device.agent.loop; parts.append(("the agent's own modules (sqlite3, yaml...)", rss()))
from edgefleet.device.runtime.engine import Engine
engine = Engine.open(sys.argv[1]); parts.append(("LiteRT + mobilenet_v2 opened (XNNPACK)", rss()))
import numpy as np
frame = np.zeros((480, 640, 3), np.uint8); engine.infer(engine.prepare(frame)); parts.append(("first inference", rss()))
frames = [np.zeros((480, 640, 3), np.uint8) + i for i in range(4)]; parts.append(("4 decoded 640x480 frames", rss()))
from google.cloud import pubsub_v1; parts.append(("google-cloud-pubsub (only with pubsub_project)", rss()))
print(json.dumps(parts))
"""


def bench_rss_parts(coral: Path) -> list[Row]:
    """What the agent's resident memory is made of: a fresh interpreter, one part after another."""
    output = subprocess.run([sys.executable, "-c", _RSS_PARTS, str(coral / V2_MODEL)], capture_output=True,
                            text=True, check=True).stdout
    parts = json.loads(output.strip().splitlines()[-1])
    rows, previous = [], 0.0
    for name, rss in parts:
        rows.append((f"RSS: + {name}", f"+{rss - previous:.0f} MB", f"{rss:.0f} MB in all", ""))
        previous = rss
    return rows


def run(coral: Path, work: Path, window_s: float, reps: int, spool_s: float) -> list[Row]:
    load_before = os.getloadavg()
    rows = []
    for model_file in (TPU_SPEED_MODEL, V2_MODEL):
        for mode in ("summary", "every"):
            rows.append(bench_loop_ratio(coral, work, model_file, mode, window_s, reps))
    for mode in ("summary", "every"):  # beside the CPU stand-in, not instead of it
        rows.append(accelerator_standin.bench_loop_ratio(coral, work, V2_MODEL, mode, window_s, reps))
    summary_s = 2 * TelemetryConfig().summary_interval_s  # two summaries: a window shorter sees none
    for mode in ("every", "summary"):
        for rate in SPOOL_RATES:
            for flush_interval_s in (UNBATCHED_FLUSH_S, TelemetryConfig().flush_interval_s):
                rows.append(bench_spool_io(work, mode, rate, flush_interval_s,
                                           spool_s if mode == "every" else max(spool_s, summary_s)))
    rows.extend(bench_agent_process(coral, work, PROCESS_WINDOW_S))
    rows.extend(bench_rss_parts(coral))
    load_after = os.getloadavg()
    rows.append(("machine load (1-min load average, before / after)", f"{load_before[0]:.1f} / {load_after[0]:.1f}",
                 f"{os.cpu_count()} cores", "shared: other engineers' tests ran meanwhile"))
    shutil.rmtree(work, ignore_errors=True)
    return rows
