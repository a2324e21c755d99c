"""An Edge TPU stand-in for the hot-path benchmark: an accelerator that takes the CPU off `invoke()`.

The CPU stand-in (mobilenet_v1_0.25_128 on the CPU, `bench.agent_hotpath`) runs `invoke()` on one of this
machine's two cores, so the raw baseline and the loop compete for the same cores in a way a real Edge TPU
does not: on a USB or PCIe Edge TPU the host thread waits for the accelerator (the GIL released, the CPU
idle) while capture and telemetry run beside it. This stand-in mimics that part, and says so:

- `invoke()` waits the accelerator's time with the GIL released (`time.sleep`, woken by the kernel like a
  USB completion), timed from Coral's published time per inference for the model (coral.ai/docs/edgetpu/
  benchmarks, Table 1: MobileNet v2 224x224, 2.6 ms on the USB Accelerator (USB 3.0) and on the Dev Board;
  those figures exclude preprocessing, as here). It computes nothing: the outputs stay those of the last real
  `invoke()` (made once when the stand-in is put in place), so results are the same every frame.
- One `invoke()` at a time (the interpreter's lock, as the real delegate's): the wait is not pipelined.
- `set_tensor` still copies the input into the real interpreter (the host's half of a USB transfer).

It is a stand-in for a benchmark, not a model of a TPU's limits beyond these: not the host CPU libedgetpu's
USB transfers take, no USB bandwidth shared with a camera, no thermal throttling, no TPU clock setting
(libedgetpu's `-std` vs `-max`).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from bench import agent_hotpath

PUBLISHED_LATENCY_S = {"mobilenet_v2_1.0_224_quant.tflite": 0.0026}
"""Coral's published Edge TPU time per inference (Table 1, USB Accelerator on USB 3.0)."""


class AcceleratorStandIn:
    """Wraps a real interpreter: `invoke()` waits `latency_s` with the GIL released instead of computing.

    Args:
        interpreter: the real (CPU) interpreter, already holding an input; invoked once here for its outputs.
        latency_s: the accelerator's time per inference.
    """

    def __init__(self, interpreter: Any, latency_s: float) -> None:
        interpreter.invoke()  # real outputs once: what every stand-in invoke() leaves behind
        self._interpreter = interpreter
        self.latency_s = latency_s

    def invoke(self) -> None:
        end = time.perf_counter() + self.latency_s
        while (remaining := end - time.perf_counter()) > 0:
            time.sleep(remaining)  # releases the GIL: the host CPU is free while the "TPU" works

    def __getattr__(self, name: str) -> Any:  # set_tensor, get_tensor, details: the real interpreter's
        return getattr(self._interpreter, name)


def put_in_place(agent: Any, latency_s: float) -> None:
    """Puts the stand-in under the running agent's active engine, between two frames (the engine's lock)."""
    engine = agent._active.engine  # noqa: SLF001 - the benchmark swaps the accelerator under a running loop
    with engine._lock:  # noqa: SLF001
        engine._interpreter = AcceleratorStandIn(engine._interpreter, latency_s)  # noqa: SLF001


def bench_loop_ratio(coral: Path, work: Path, model_file: str, mode: str, window_s: float,
                     reps: int) -> agent_hotpath.Row:
    """Loop / raw `invoke()` with both on the stand-in accelerator, interleaved windows as the CPU measure."""
    latency_s = PUBLISHED_LATENCY_S[model_file]
    raw = AcceleratorStandIn(agent_hotpath.raw_interpreter(coral, model_file), latency_s)
    ratios, loops, raws, stage_cpu = [], [], [], []
    with agent_hotpath.RunningAgent(coral, work, model_file, mode) as running:
        put_in_place(running.agent, latency_s)
        for rep in range(reps):
            for part in (("raw", "loop") if rep % 2 == 0 else ("loop", "raw")):
                running.source.gate.set() if part == "loop" else running.source.gate.clear()
                time.sleep(agent_hotpath.IDLE_S)
                if part == "raw":
                    raws.append(agent_hotpath.raw_invoke_fps(raw, window_s)[0])
                else:
                    fps, stages = agent_hotpath.loop_fps(running.agent, window_s)
                    loops.append(fps)
                    stage_cpu.append(stages)
            ratios.append(loops[-1] / raws[-1])
        lost = running.agent.telemetry.stats().queue_dropped
    ratio, goal = statistics.median(ratios), agent_hotpath.LOOP_GOALS[(agent_hotpath.TPU_SPEED_MODEL, mode)]
    label = "summaries" if mode == "summary" else "a message per inference"
    stages = ", ".join(f"{name} {statistics.median(s.get(name, 0.0) for s in stage_cpu):.0f}"
                       for name in agent_hotpath.STAGES)
    return (f"loop / raw invoke(), Edge TPU STAND-IN ({Path(model_file).stem}, invoke() waits "
            f"{latency_s * 1000:g} ms, CPU idle), {label}",
            f"{statistics.median(loops):.0f} fps / {statistics.median(raws):.0f} /s",
            f"{ratio:.2f}x (pairs {min(ratios):.2f}-{max(ratios):.2f}, n={reps})",
            f"goal (TPU speed) >= {goal}x: {'met' if ratio >= goal else 'NOT met'}"
            + (f"; {lost} records dropped before the spool" if lost else "")
            + f"\nCPU us/frame: {stages}")
