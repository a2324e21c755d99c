"""The shadow runner (issue 25): a candidate version runs beside the primary on a share of the frames, its
answers counted (`shadow_stats`) and never acted on.

How the device learns of its candidate: the store's `models/<model>/shadow` pointer (a symlink like `current`
and `previous`, `edgefleet.device.shadow_pointer`), set by `edgefleet-agent shadow MODEL VERSION` after the
version was installed without `--activate` (the SSH rollout's shadow wave does both) and removed by
`edgefleet-agent shadow MODEL --clear`; in pull mode, by the poller when a staged rollout's signed pointer names
this device in its shadow share (`edgefleet.device.pull_shadow`). Setting it verifies the version as an
activation would (manifest signature, every file's hash, the version floor, no refusal); the runner verifies it
again when it loads it (the same `prepare_model` as a swap: signature, hashes, golden smoke test) on the CPU or,
while the primary holds the Edge TPU, co-resident in this process (a second process may not open it:
`runtime.tpu_access`).

Off the primary's path: the inference thread only decides whether a frame is in the share (an integer add) and
puts it on a small queue without waiting; a frame that finds the queue full is dropped and counted. The
candidate infers that frame in its own thread (on the primary's tensor when both models take the same input,
else it prepares its own), so a slow candidate never blocks or reorders a primary frame. The thread is not
niced, unlike the model watcher: it holds the GIL between its native calls, and a niced thread the scheduler
leaves waiting while it holds the GIL stalls the primary with it (a priority inversion the benchmark showed).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import NamedTuple

import numpy as np

from edgefleet.device.agent.config import AgentConfig
from edgefleet.device.agent.shadow_stats import ShadowReport, ShadowTally, ShareSampler
from edgefleet.device.agent.swap import ActiveModel, prepare_model
from edgefleet.device.shadow_pointer import (  # the store's side, re-exported for its callers (`__all__`)
    SHADOW_POINTER,
    check_candidate,
    clear_shadow,
    set_shadow,
    shadow_version,
)
from edgefleet.device.store import ModelStore
from edgefleet.device.store_reader import InstalledVersion
from edgefleet.kernel.contracts.status import boot_clock, read_boot_id
from edgefleet.kernel.contracts.telemetry import ShadowSummary
from edgefleet.kernel.errors import EdgefleetError
from edgefleet.kernel.fsutil import atomic_write_bytes

__all__ = [
    "QUEUE_POLL_S", "SHADOW_POINTER", "ShadowFrame", "ShadowRunner", "check_candidate", "clear_shadow", "input_key",
    "set_shadow", "shadow_version",
]

log = logging.getLogger(__name__)

QUEUE_POLL_S = 0.1


# --- the runner (the agent's side) ---------------------------------------------------------------------------
class ShadowFrame(NamedTuple):
    """A sampled frame (and its tensor as the primary's engine prepared it) and the primary's answer to it."""

    image: np.ndarray
    tensor: np.ndarray
    prepared_for: object
    """What the tensor was prepared for (`input_key`): the candidate reuses it when its own key is the same."""
    primary: Sequence[object]
    primary_ms: float
    primary_version: str
    detector: bool


Prepare = Callable[[AgentConfig, InstalledVersion], ActiveModel]


def input_key(model: ActiveModel) -> tuple[object, bool]:
    """What an engine's prepared tensor depends on: its input tensor (shape, dtype, quantization) and the task
    (a detector keeps the aspect ratio). Two models with the same key take the same tensor."""
    return model.engine.info.input, model.detector


class ShadowRunner:
    """Runs the store's shadow candidate on `config.shadow.share` of the frames (see the module doc).

    Args:
        prepare: verifies, opens and smoke-tests a version (the agent passes `prepare_model` with its Edge TPU
            access, so the candidate opens in-process beside a primary that holds the TPU).
    """

    def __init__(self, config: AgentConfig, store: ModelStore, prepare: Prepare = prepare_model) -> None:
        self.config = config
        self._store = store
        self._prepare = prepare
        self.sampler = ShareSampler(config.shadow.share)  # (bench.shadow_bench alternates shares in one run)
        self._frames: queue.Queue[ShadowFrame] = queue.Queue(config.shadow.queue)
        self.candidate: ActiveModel | None = None
        self.tally: ShadowTally | None = None
        self.dropped = 0
        self.error: str | None = None
        self._decided: str | None = None
        self._primary: str | None = None
        self._since: datetime | None = None
        self._started_s, self._boot_id = time.monotonic(), read_boot_id()  # the report's boot-clock stamp

    @property
    def enabled(self) -> bool:
        return self.config.shadow.share > 0

    # called on the inference thread, after the primary's answer was recorded: never blocks
    def offer(self, image: np.ndarray, tensor: np.ndarray, primary: ActiveModel, results: Sequence[object],
              latency_ms: float) -> None:
        """A frame `primary` answered with `results` (its prepared `tensor` too): queued when in the share."""
        if self.candidate is None or not self.sampler.take():
            return
        try:
            self._frames.put_nowait(ShadowFrame(image, tensor, input_key(primary), results, latency_ms,
                                                primary.version, primary.detector))
        except queue.Full:
            self.dropped += 1

    def take_window(self, max_frames: int) -> ShadowSummary | None:
        """For the telemetry writer: the window's shadow summary (see `ShadowTally.take_window`)."""
        tally = self.tally
        return tally.take_window(max_frames) if tally is not None else None

    def run(self, stop: threading.Event) -> None:
        """The shadow thread: follows the pointer, runs the candidate on the queued frames, writes the report.
        The candidate stays loaded when it returns, its last pairs waiting for the telemetry's final window:
        the agent calls `close` once telemetry has stopped."""
        next_check = 0.0
        try:
            while not stop.is_set():
                try:
                    next_check = self._step(next_check)
                except Exception as error:  # noqa: BLE001 - a bug in the shadow never stops the agent
                    self.error = f"shadow: unexpected {type(error).__name__}: {error}"
                    log.exception("unexpected error in the shadow runner")
                    stop.wait(self.config.shadow.report_interval_s)
        finally:
            self._write_report()

    def close(self) -> None:
        """Unloads the candidate (after the shadow thread and the telemetry have stopped)."""
        self._unload()

    def _step(self, next_check: float) -> float:
        """One turn: the pointer and the report when due, then at most one queued frame. Returns the next due."""
        now = time.monotonic()
        if now >= next_check:
            self._follow_pointer()
            self._write_report()
            next_check = now + self.config.shadow.report_interval_s
        try:
            frame = self._frames.get(timeout=QUEUE_POLL_S)
        except queue.Empty:
            return next_check
        self._infer(frame)
        return next_check

    def _infer(self, frame: ShadowFrame) -> None:
        candidate, tally = self.candidate, self.tally
        if candidate is None or tally is None:
            return
        if frame.primary_version != self._primary:  # pairs are made with one primary: a swap starts over
            self._primary, self._since = frame.primary_version, _now()
            tally = self.tally = ShadowTally(candidate.ref)
        try:
            engine = candidate.engine
            same = frame.prepared_for == input_key(candidate)  # most candidates: no second resize per pair
            tensor = frame.tensor if same else engine.prepare(frame.image)
            result = engine.infer(tensor, (frame.image.shape[1], frame.image.shape[0]))
        except (EdgefleetError, ValueError) as error:
            tally.add_error()
            self.error = f"candidate {candidate.version}: {error}"
            return
        tally.add(frame.primary, frame.primary_ms, result.results, result.latency_ms, detector=frame.detector)

    def _follow_pointer(self) -> None:
        model = self.config.model
        try:
            pointed = self._store.pointer(model, SHADOW_POINTER) if self.enabled else None
        except (OSError, EdgefleetError) as error:
            self.error = f"shadow pointer: {error}"
            return
        if pointed == self._decided:
            return
        self._decided = pointed
        self._unload()
        if pointed is None:
            return
        try:
            installed = check_candidate(self._store, model, pointed)
            self.candidate = self._prepare(self.config, installed)
        except EdgefleetError as error:
            self.error = f"candidate {pointed} does not run: {error}"
            log.error("%s", self.error)
            return
        self.tally, self._primary, self._since, self.error = ShadowTally(self.candidate.ref), None, _now(), None
        log.info("shadow candidate %s %s runs on %.0f %% of the frames (%s)", model, pointed,
                 self.config.shadow.share * 100, self.candidate.engine.backend)

    def _unload(self) -> None:
        candidate, self.candidate, self.tally = self.candidate, None, None
        while not self._frames.empty():
            self._frames.get_nowait()
        if candidate is not None:
            candidate.engine.close()

    def report(self) -> ShadowReport:
        tally = self.tally
        return ShadowReport(device_id=self.config.device_id, model=self.config.model, candidate=self._decided,
                            primary=self._primary, share=self.config.shadow.share, since=self._since,
                            updated_at=_now(), boot=boot_clock(self._boot_id, self._started_s, time.monotonic()),
                            dropped=self.dropped, error=self.error,
                            summary=tally.total() if tally is not None else None)

    def _write_report(self) -> None:
        if not self.enabled:
            return
        try:
            atomic_write_bytes(self.config.shadow_report_path,
                               self.report().model_dump_json(by_alias=True).encode())
        except OSError as error:
            log.warning("cannot write the shadow report: %s", error)


def _now() -> datetime:
    return datetime.now(timezone.utc)
