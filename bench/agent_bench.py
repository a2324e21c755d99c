"""Device agent benchmarks (issue 2), each against a baseline measured in the same run.

1. Loop throughput on mobilenet_v2_1.0_224_quant with 640x480 RGB frames and telemetry (mode `every`) to the
   Pub/Sub emulator, against (a) the raw `invoke()` bound of the same model and threads, and (b) the naive
   tutorial loop (PIL LANCZOS resize per frame, publish each message and wait on its future).
2. Hot swap: 20 swaps while the loop runs: frames lost, and the longest gap between results against the median.
3. Outage: the emulator frozen (SIGSTOP, so it keeps its state and every message can be counted) for 30 s
   under load: messages lost, and loop fps during the outage against before.
4. At Edge TPU speed (issue 12): mobilenet_v1_0.25_128_quant, whose raw `invoke()` here runs at TPU-class
   rates (an Edge TPU runs MobileNet v2 in ~2.6 ms), so the loop's own overhead shows: 640x480 frames, each
   preprocessed as a camera frame would be (no cached tensors), against raw `invoke()`, with summaries and with
   a message per inference.

5. The hot path (issue 24, `bench.agent_hotpath`): loop / raw `invoke()` at TPU and MobileNet v2 speed in
   interleaved windows (and on an Edge TPU stand-in whose `invoke()` leaves the CPU free), the spool's
   transactions and bytes per second, RSS and CPU per frame.

6. Status-file writes on the agent root's filesystem (issue 24, `bench.status_writes`): before and after the
   runtime directory.

Run: `python -m bench.agent_bench [--seconds S] [--outage-seconds S] [--only tpu-speed|hotpath|status-writes]
[--window S] [--reps N] [--spool-seconds S]` (needs ../shared/coral-test-data, or EDGEFLEET_CORAL_TEST_DATA).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from google.cloud import pubsub_v1
from PIL import Image
from rich.console import Console
from rich.table import Table

from bench import agent_hotpath, status_writes
from edgefleet.device.agent.config import load_config
from edgefleet.device.agent.loop import Agent
from edgefleet.device.runtime.engine import Engine
from edgefleet.device.runtime.golden import compute_golden
from edgefleet.device.runtime.interpreter import Interpreter
from edgefleet.device.store import ModelStore
from edgefleet.device.telemetry.service import TelemetryService
from edgefleet.flows.release.bundle import create_version_dir
from edgefleet.kernel.trust.signatures import generate_keypair, save_public_key
from edgefleet.local.emulators import PubSubEmulator

CORAL = Path(os.environ.get("EDGEFLEET_CORAL_TEST_DATA")
             or Path(__file__).resolve().parents[2] / "shared" / "coral-test-data")
MODEL_FILE = "mobilenet_v2_1.0_224_quant.tflite"
TPU_SPEED_MODEL = "mobilenet_v1_0.25_128_quant.tflite"
TPU_SPEED_GOALS = {"summary": 0.85, "every": 0.6}  # x raw invoke()
FRAME_SIZE = (640, 480)
IMAGES = ("cat.bmp", "parrot.jpg", "grace_hopper.bmp", "bird.bmp")
SWAPS = 20
WIDE = 180  # table width, also when the output is not a terminal (a notes file)
console = Console()


class TimedTelemetry(TelemetryService):
    """The real telemetry service, also noting when each result came out (for the swap-gap measure)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.result_times: list[float] = []

    def record_inference(self, model, latency_ms, results=(), **kwargs):  # noqa: ANN001,ANN201
        self.result_times.append(time.perf_counter())
        return super().record_inference(model, latency_ms, results, **kwargs)


def frames_640x480() -> list[np.ndarray]:
    return [np.asarray(Image.open(CORAL / name).convert("RGB").resize(FRAME_SIZE)) for name in IMAGES]


def raw_invoke_fps(seconds: float, model_file: str = MODEL_FILE) -> float:
    """(a) The bound: the same model on the same thread count, invoke() alone on a ready input."""
    interpreter = Interpreter(model_path=str(CORAL / model_file), num_threads=1)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        interpreter.invoke()
        count += 1
    return count / (time.perf_counter() - start)


def tutorial_loop_fps(seconds: float, frames: list[np.ndarray], topic: str) -> float:
    """(b) The naive tutorial loop: LANCZOS resize, invoke, publish and wait on each future."""
    interpreter = Interpreter(model_path=str(CORAL / MODEL_FILE), num_threads=1)
    interpreter.allocate_tensors()
    detail, output = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    _, height, width, _ = detail["shape"]
    publisher = pubsub_v1.PublisherClient()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        image = Image.fromarray(frames[count % len(frames)]).resize((width, height), Image.Resampling.LANCZOS)
        interpreter.set_tensor(detail["index"], np.asarray(image)[np.newaxis])
        interpreter.invoke()
        scores = interpreter.get_tensor(output["index"])[0]
        top = int(np.argmax(scores))
        payload = json.dumps({"device_id": "tutorial", "seq": count + 1, "top": top, "score": int(scores[top])})
        publisher.publish(topic, payload.encode()).result(timeout=30)
        count += 1
    return count / (time.perf_counter() - start)


def signed_store(work: Path, root: Path, model_file: str, versions: tuple[str, ...], name: str) -> ModelStore:
    """A device store at `root` trusting a fresh release key, with `model_file` released (signed, golden outputs)
    as each of `versions` of model `imagenet` and installed; the first is active. The agent and shadow
    benchmarks' one store setup."""
    private_key, public_key = generate_keypair()
    save_public_key(public_key, root / "keys" / "release.pub")
    store = ModelStore(root, public_key=public_key)
    with Engine.open(CORAL / model_file) as engine:
        golden = compute_golden(engine, (1, 2))
    for version in versions:
        release = work / f"{name}-release-{version}"
        create_version_dir(release, {"model_cpu.tflite": CORAL / model_file,
                                     "labels.txt": CORAL / "imagenet_labels.txt"},
                           private_key=private_key, model="imagenet", version=version, golden=golden)
        store.install(release)
    store.activate("imagenet", versions[0])
    return store


def bench_frames(work: Path) -> Path:
    """`work/frames`: the Coral test photographs the benchmarks' agents read (copied once)."""
    frames = work / "frames"
    if not frames.exists():
        frames.mkdir()
        for name in IMAGES:
            shutil.copy(CORAL / name, frames / name)
    return frames


class Fixture:
    """A signed model in a device store, an agent config, the emulator topic and subscription."""

    def __init__(self, work: Path, emulator: PubSubEmulator, name: str, mode: str = "every",
                 model_file: str = MODEL_FILE) -> None:
        self.work, self.emulator = work, emulator
        self.root = work / name
        self.store = signed_store(work, self.root, model_file, ("1.0.0", "1.0.1"), name)
        frames = bench_frames(work)
        publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
        self.topic = publisher.create_topic(name=publisher.topic_path(emulator.project, f"t-{name}")).name
        self.subscription = subscriber.create_subscription(
            name=subscriber.subscription_path(emulator.project, f"s-{name}"), topic=self.topic).name
        config_path = work / f"{name}.yaml"
        config_path.write_text(
            f"device_id: bench-{name}\nmodel: imagenet\nroot: {self.root}\n"
            f"source: {{kind: images, path: {frames}, frame_width: {FRAME_SIZE[0]}, "
            f"frame_height: {FRAME_SIZE[1]}}}\n"
            f"swap: {{watch_interval_s: 0.1}}\n"
            f"telemetry: {{mode: {mode}, pubsub_project: {emulator.project}, pubsub_topic: t-{name}}}\n")
        self.config = load_config(config_path)

    def agent(self) -> tuple[Agent, TimedTelemetry]:
        telemetry = TimedTelemetry(self.config.telemetry, self.config.spool_path, self.config.device_id)
        return Agent(self.config, telemetry=telemetry), telemetry


def run_agent(agent: Agent) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while agent.stats.frames < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    return stop, thread


def fps_over(agent: Agent, seconds: float) -> float:
    frames, start = agent.stats.frames, time.perf_counter()
    time.sleep(seconds)
    return (agent.stats.frames - frames) / (time.perf_counter() - start)


def pulled_seqs(subscription: str) -> set[int]:
    subscriber = pubsub_v1.SubscriberClient()
    seqs: set[int] = set()
    while True:
        response = subscriber.pull(subscription=subscription, max_messages=1000, timeout=10)
        if not response.received_messages:
            return seqs
        seqs.update(json.loads(r.message.data)["seq"] for r in response.received_messages)
        subscriber.acknowledge(subscription=subscription, ack_ids=[r.ack_id for r in response.received_messages])


def bench_throughput(work: Path, emulator: PubSubEmulator, seconds: float) -> list[tuple[str, str, str, str]]:
    frames = frames_640x480()
    raw = raw_invoke_fps(seconds)
    publisher = pubsub_v1.PublisherClient()
    tutorial_topic = publisher.create_topic(name=publisher.topic_path(emulator.project, "tutorial")).name
    tutorial = tutorial_loop_fps(seconds, frames, tutorial_topic)
    loops = {}
    for mode in ("every", "summary"):
        fixture = Fixture(work, emulator, f"throughput-{mode}", mode=mode)
        agent, _ = fixture.agent()
        stop, thread = run_agent(agent)
        loops[mode] = fps_over(agent, seconds)
        stop.set()
        thread.join(60)
    loop, summary = loops["every"], loops["summary"]
    return [
        ("raw invoke() bound (a)", f"{raw:.1f} fps", "1.00x of (a)", ""),
        ("tutorial loop (b)", f"{tutorial:.1f} fps", f"{tutorial / raw:.2f}x of (a)", ""),
        ("edgefleet loop, 640x480, telemetry every inference", f"{loop:.1f} fps",
         f"{loop / raw:.2f}x of (a), {loop / tutorial:.1f}x of (b)",
         "goal >= 0.85x (a), >= 4x (b): " + ("met" if loop / raw >= 0.85 and loop / tutorial >= 4 else "NOT met")),
        ("edgefleet loop, 640x480, telemetry summaries (default)", f"{summary:.1f} fps",
         f"{summary / raw:.2f}x of (a), {summary / tutorial:.1f}x of (b)",
         "goal >= 0.85x (a), >= 4x (b): "
         + ("met" if summary / raw >= 0.85 and summary / tutorial >= 4 else "NOT met")),
    ]


def bench_tpu_speed(work: Path, emulator: PubSubEmulator, seconds: float) -> list[tuple[str, str, str, str]]:
    """4. The loop against raw invoke() on a model as fast as an Edge TPU: the loop's own overhead."""
    raw = raw_invoke_fps(seconds, TPU_SPEED_MODEL)
    rows = [(f"raw invoke() bound, {TPU_SPEED_MODEL}", f"{raw:.0f} /s", "1.00x", "")]
    for mode, label in (("summary", "telemetry summaries"), ("every", "a message per inference")):
        fixture = Fixture(work, emulator, f"tpu-speed-{mode}", mode=mode, model_file=TPU_SPEED_MODEL)
        agent, _ = fixture.agent()
        stop, thread = run_agent(agent)
        fps = fps_over(agent, seconds)
        stop.set()
        thread.join(60)
        goal = TPU_SPEED_GOALS[mode]
        rows.append((f"loop at TPU speed, 640x480, {label}", f"{fps:.0f} fps", f"{fps / raw:.2f}x of raw",
                     f"goal >= {goal}x: " + ("met" if fps / raw >= goal else "NOT met")))
    return rows


def bench_swaps(work: Path, emulator: PubSubEmulator) -> list[tuple[str, str, str, str]]:
    fixture = Fixture(work, emulator, "swap")
    agent, telemetry = fixture.agent()
    stop, thread = run_agent(agent)
    for i in range(SWAPS):
        fixture.store.activate("imagenet", "1.0.1" if i % 2 == 0 else "1.0.0")
        deadline = time.monotonic() + 30
        while agent.watcher.swaps < i + 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
    stop.set()
    thread.join(60)
    gaps = np.diff(np.array(telemetry.result_times)) * 1000
    median, longest = float(statistics.median(gaps)), float(gaps.max())
    lost = agent.captured - agent.stats.frames - agent.stats.errors
    goal = 2 * median + 10
    return [
        (f"hot swap x{agent.watcher.swaps}", f"{lost} frames lost", "",
         "goal 0: " + ("met" if lost == 0 else "NOT met")),
        ("longest gap between results", f"{longest:.1f} ms", f"median {median:.2f} ms",
         f"goal < 2x median + 10 ms = {goal:.1f} ms: " + ("met" if longest < goal else "NOT met")),
    ]


def bench_outage(work: Path, emulator: PubSubEmulator, seconds: float, outage_s: float
                 ) -> list[tuple[str, str, str, str]]:
    fixture = Fixture(work, emulator, "outage")
    agent, _ = fixture.agent()
    stop, thread = run_agent(agent)
    before = fps_over(agent, seconds)
    os.kill(emulator.process.pid, signal.SIGSTOP)  # the JVM freezes: calls hang, state is kept
    try:
        during = fps_over(agent, outage_s)
        depth_in_outage = agent.telemetry.stats().depth
    finally:
        os.kill(emulator.process.pid, signal.SIGCONT)
    time.sleep(seconds)
    stop.set()
    thread.join(120)
    stats = agent.telemetry.stats()
    seqs = pulled_seqs(fixture.subscription)
    lost = stats.last_seq - len(seqs & set(range(1, stats.last_seq + 1)))
    return [
        (f"emulator frozen {outage_s:.0f} s", f"{lost} of {stats.last_seq} messages lost",
         f"spool peaked >= {depth_in_outage}", "goal 0: " + ("met" if lost == 0 else "NOT met")),
        ("loop fps during outage", f"{during:.1f} fps", f"{during / before:.2f}x of before ({before:.1f})",
         "goal >= 0.9x: " + ("met" if during / before >= 0.9 else "NOT met")),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--outage-seconds", type=float, default=30.0)
    parser.add_argument("--only", choices=("all", "tpu-speed", "hotpath", "status-writes"), default="all")
    parser.add_argument("--status-seconds", type=float, default=status_writes.DEFAULT_SECONDS,
                        help="status-writes: measured seconds per run")
    parser.add_argument("--window", type=float, default=3.0, help="hotpath: seconds per loop or raw window")
    parser.add_argument("--reps", type=int, default=5, help="hotpath: loop/raw window pairs per measure")
    parser.add_argument("--spool-seconds", type=float, default=5.0, help="hotpath: seconds per spool measure")
    args = parser.parse_args(argv if argv is not None else sys.argv[1:] if __name__ == "__main__" else [])
    if not CORAL.is_dir():
        console.print(f"[red]{CORAL} not found: the agent benchmarks run Coral's published models[/]")
        return 1
    logging.basicConfig(level=logging.WARNING)
    table = Table(title=f"edgefleet agent benchmarks ({os.cpu_count()} cores, 1 inference thread)")
    for column in ("measure", "result", "ratio", "goal"):
        table.add_column(column)
    local = {"hotpath": lambda temp: agent_hotpath.run(CORAL, temp, args.window, args.reps, args.spool_seconds),
             "status-writes": lambda temp: status_writes.run(CORAL, temp, args.status_seconds)}
    if args.only in local:  # no emulator: telemetry goes to the local sink, or to none for the spool
        with tempfile.TemporaryDirectory() as temp:
            for row in local[args.only](Path(temp)):
                table.add_row(*row)
        Console(width=WIDE).print(table)
        return 0
    with tempfile.TemporaryDirectory() as temp, PubSubEmulator() as emulator:
        os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host
        work = Path(temp)
        sections = [lambda: bench_tpu_speed(work, emulator, args.seconds)]
        if args.only == "all":
            sections = [lambda: bench_throughput(work, emulator, args.seconds), lambda: bench_swaps(work, emulator),
                        lambda: bench_outage(work, emulator, args.seconds, args.outage_seconds), *sections,
                        lambda: agent_hotpath.run(CORAL, work / "hotpath", args.window, args.reps,
                                                  args.spool_seconds),
                        lambda: status_writes.run(CORAL, work / "status-writes", args.status_seconds)]
        for section in sections:
            for row in section():
                table.add_row(*row)
    Console(width=WIDE).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
