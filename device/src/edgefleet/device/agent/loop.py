"""The agent's loop: capture -> inference -> telemetry, each its own stage, joined by bounded queues.

    capture thread   : source frames -> engine.prepare() (resize, quantize) -> frames queue (bounded; the
                       capture thread, when it found it full, resumes at half: one wake-up per half queue)
    inference thread : frames queue -> engine.infer() -> stats + telemetry.record_inference() (a queue put)
    telemetry        : TelemetryService's own threads: spool (SQLite) -> Pub/Sub or local sink
    model watcher    : store `current` pointer -> verify -> load -> smoke test -> ModelSlot
    registry poller  : (pull mode) channel pointer -> download -> verify -> install -> activate
    main thread      : status file on every state change, else every few seconds (status.interval_s);
                       SIGTERM/SIGINT set `stop`, then everything drains

Inference never waits on the network, the spool or a model load: those run in other threads and only hand
over finished things (a prepared frame, a ready model) through a queue or the slot.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import sys
import threading
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from edgefleet.device.agent.config import AgentConfig
from edgefleet.device.agent.handoff import FrameQueue
from edgefleet.device.agent.runtime_files import link_runtime_files
from edgefleet.device.agent.shadow import ShadowRunner
from edgefleet.device.agent.sources import FrameSource, open_source
from edgefleet.device.agent.stats import LoopStats
from edgefleet.device.agent.status_schedule import StatusSchedule
from edgefleet.device.agent.swap import ActiveModel, ModelSlot, ModelWatcher, lower_thread_priority, prepare_model
from edgefleet.device.agent.watchdog import SystemdNotifier
from edgefleet.device.runtime.interpreter import edgetpu_present
from edgefleet.device.store import ModelStore, StoreOptions
from edgefleet.device.telemetry.health import read_health
from edgefleet.device.telemetry.service import TelemetryService, TelemetryStats
from edgefleet.device.trust.device_identity import load_or_create_device_key, sign_spot_sample, sign_telemetry
from edgefleet.kernel.contracts.status import (
    AgentState,
    AgentStatus,
    TelemetryState,
    boot_clock,
    read_boot_id,
    write_status,
)
from edgefleet.kernel.contracts.telemetry import EventKind
from edgefleet.kernel.errors import EdgefleetError, ModelError
from edgefleet.kernel.fsutil import file_lock

if TYPE_CHECKING:  # pull mode's modules load only when a registry is configured (the spot check's when enabled)
    from edgefleet.device.poller import ChannelPoller
    from edgefleet.device.pull import PullResult
    from edgefleet.device.spotcheck.runner import SpotChecker

log = logging.getLogger(__name__)

AGENT_LOCK_FILE = ".agent.lock"
LOCK_MARGIN_S = 5.0

QUEUE_POLL_S = 0.1  # how long a stage blocks on a queue before re-checking `stop`


class Frame(NamedTuple):
    """A captured frame and its input tensor, prepared for one input shape."""

    image: np.ndarray
    tensor: np.ndarray
    prepared_for: tuple[int, ...]


def telemetry_state(stats: TelemetryStats, *, off: bool) -> TelemetryState:
    """What the status says of telemetry: off (never started), sink_down (the sink cannot open: retried),
    failing (publishing fails: retried), ok. Pure."""
    if off:
        return "off"
    if not stats.sink_started:
        return "sink_down"
    return "failing" if stats.failing else "ok"


class Agent:
    """One device agent. `run(stop)` blocks until `stop` is set (or the source ends), then drains.

    Args:
        config: the agent configuration.
        source: frame source; opened from `config.source` when None.
        telemetry: telemetry service; built from `config.telemetry` when None.
    """

    def __init__(self, config: AgentConfig, *, source: FrameSource | None = None,
                 telemetry: TelemetryService | None = None) -> None:
        self.config = config
        config.root.mkdir(parents=True, exist_ok=True)
        self.store = ModelStore(config.root, public_key=config.public_key_path,
                                options=StoreOptions(refuse_development_keys=config.refuse_development_keys))
        self.stats = LoopStats(config.status.latency_window)
        self.slot = ModelSlot()
        self.tpu_present = edgetpu_present(library=config.inference.edgetpu_library)
        self.watcher = ModelWatcher(config, self.store, self.slot, self._model_event)
        # The shadow candidate (issue 25), off unless shadow.share > 0: opened with the watcher's Edge TPU access,
        # so beside a primary holding the TPU it opens in this process, never in a probe child.
        self.shadow = ShadowRunner(config, self.store, functools.partial(prepare_model, probe=self.watcher.tpu.outcome))
        self.telemetry = telemetry or TelemetryService(
            config.telemetry, config.spool_path, config.device_id,
            health_provider=functools.partial(read_health, tpu_present=self.tpu_present),
            signer=functools.partial(sign_telemetry, load_or_create_device_key(config.root)),
            credentials_file=config.credentials_file,
            shadow=self.shadow.take_window if self.shadow.enabled else None)
        self._source = source
        self._frames: FrameQueue[Frame] = FrameQueue(config.queues.frames)
        self._active: ActiveModel | None = None
        self.captured = 0  # frames handed to inference; after a drain, equals frames + errors
        self._capture_done = threading.Event()
        self._inference_done = threading.Event()
        self._poller: ChannelPoller | None = None  # pull mode, when configured
        self.bad_frames = 0  # frames that could not be prepared: skipped, counted
        self._started_at = datetime.now(timezone.utc)
        self._started_s, self._boot_id = time.monotonic(), read_boot_id()  # what the updater judges (not NTP's)
        self._state: AgentState = "starting"
        self._last_error: str | None = None
        self._notifier = SystemdNotifier.from_environment()  # systemd's READY=1 and watchdog (no-op elsewhere)
        self._inferring = False  # inside engine.infer(): the watchdog is fed only when frames progress then
        self._telemetry_off: str | None = None  # why telemetry could not start at all (inference goes on)
        self.spot_check = self._spot_checker()  # None unless spot_check.enabled: frames leave only then

    # --- stages --------------------------------------------------------------------------------------
    def _capture(self, stop: threading.Event) -> None:
        source = self._source
        try:
            if source is None:
                source = self._source = open_source(self.config.source)
            min_interval = 1.0 / self.config.source.max_fps if self.config.source.max_fps else 0.0
            next_due = time.monotonic()
            for image in source.frames():
                if stop.is_set():
                    break
                active = self._active or self.watcher.running
                if active is None:  # no model yet: nothing to prepare for
                    stop.wait(QUEUE_POLL_S)
                    continue
                try:
                    frame = Frame(image, active.engine.prepare(image), active.engine.info.input.shape)
                except (EdgefleetError, ValueError) as error:  # one bad frame is skipped and counted
                    self.bad_frames += 1
                    if self.bad_frames in (1, 10, 100) or self.bad_frames % 1000 == 0:
                        log.warning("skipped a frame that cannot be prepared (%d so far): %s", self.bad_frames,
                                    error)
                    continue
                while not stop.is_set():
                    if self._frames.put(frame, QUEUE_POLL_S):
                        self.captured += 1
                        break
                if min_interval:
                    # Paced, never catching up on a stall (no model yet, a full queue): at most one frame
                    # early, so the rate the telemetry reports is the configured one, not a burst.
                    next_due = max(next_due + min_interval, time.monotonic() - min_interval)
                    stop.wait(max(0.0, next_due - time.monotonic()))
        except EdgefleetError as error:
            self._fail(f"frame source: {error}")
        except Exception as error:  # noqa: BLE001 - report, then let the agent stop cleanly
            log.exception("capture stage failed")
            self._fail(f"frame source: unexpected {type(error).__name__}: {error}")
        finally:
            self._capture_done.set()

    def _swap_if_offered(self) -> ActiveModel | None:
        """Takes a model the watcher offered, if any; called only between two frames."""
        candidate = self.slot.take()
        if candidate is not None:  # the model swapped out is closed by the watcher, not on this thread
            self._active = candidate
            log.info("swapped in %s %s", candidate.manifest.model, candidate.version)
        return self._active

    def _infer(self, stop: threading.Event) -> None:
        try:
            while True:
                try:
                    frame = self._frames.get(QUEUE_POLL_S)
                except queue.Empty:
                    self._swap_if_offered()
                    # Only once capture has ended: a frame it queued after `stop` is still inferred (drained).
                    if self._capture_done.is_set():
                        break
                    continue
                active = self._swap_if_offered()
                if active is None:
                    continue
                tensor = frame.tensor
                if frame.prepared_for != active.engine.info.input.shape:  # prepared for the model swapped out
                    tensor = active.engine.prepare(frame.image)
                self._inferring = True
                try:
                    result = active.engine.infer(tensor, (frame.image.shape[1], frame.image.shape[0]))
                except ModelError as error:
                    self.stats.record_error(active.version)
                    self._last_error = str(error)
                    self.telemetry.record_inference(active.ref, 0.0, error=error.message)
                    continue
                finally:
                    self._inferring = False
                self.stats.record(time.monotonic(), result.latency_ms, result.results, active.version,
                                  detector=active.detector)
                self.telemetry.record_inference(active.ref, result.latency_ms, result.results,
                                                detector=active.detector)
                self.shadow.offer(frame.image, tensor, active, result.results, result.latency_ms)
                if self.spot_check is not None:
                    self.spot_check.offer(frame.image, result.results, active.manifest.model, active.version)
        except Exception as error:  # noqa: BLE001 - a bug: report it and stop with a failure exit code
            log.exception("inference stage failed")
            self._fail(f"inference: unexpected {type(error).__name__}: {error}")
        finally:
            self._inference_done.set()

    # --- events and status ---------------------------------------------------------------------------
    def _model_event(self, kind: EventKind, detail: str, version: str | None, from_version: str | None) -> None:
        self.telemetry.record_event(kind, detail, model_version=version, from_version=from_version)

    def _fail(self, message: str) -> None:
        self._last_error = message
        self._state = "failed"
        log.error("%s", message)

    def status(self) -> AgentStatus:
        snapshot = self.stats.snapshot()
        telemetry = self.telemetry.stats()
        active = self._active
        return AgentStatus(
            device_id=self.config.device_id, pid=os.getpid(), state=self._state, started_at=self._started_at,
            updated_at=datetime.now(timezone.utc),
            model=active.manifest.model if active else self.config.model,
            version=active.version if active else None,
            variant=active.engine.variant if active else None,
            backend=active.engine.backend if active else None,
            **dict(snapshot.status_counters(active.version if active else None)),
            swaps=self.watcher.swaps, swap_failures=self.watcher.failures,
            last_error=(self._last_error or self.watcher.last_error or self._poll_error()
                        or telemetry.last_error),
            spool_depth=telemetry.depth, spool_dropped=telemetry.dropped,
            telemetry_published=telemetry.published, results_overflow=telemetry.queue_dropped,
            edgetpu_unavailable=self.watcher.edgetpu_unavailable,
            edgetpu=self.watcher.tpu.record(active.edgetpu if active else None),
            telemetry_state=telemetry_state(telemetry, off=self._telemetry_off is not None),
            telemetry_error=self._telemetry_off or (telemetry.last_error if telemetry.failing else None),
            boot=boot_clock(self._boot_id, self._started_s, time.monotonic()),
        )

    def _poll_error(self) -> str | None:
        """Pull mode's last error (registry unreachable, missing key...), while it is the latest news."""
        if self._poller is None:
            return None
        status = self._poller.status()
        return f"registry pull: {status.last_error}" if status.last_error else None

    def write_status(self) -> AgentStatus:
        status = self.status()
        write_status(self.config.status_written_path, status)
        return status

    # --- lifecycle -----------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> int:
        """Runs until `stop` is set or the frame source ends; returns the process exit code.

        Holds an exclusive lock on the agent root while it runs (two agents on one store and spool would
        corrupt both); a predecessor still draining is waited for up to `drain_timeout_s` (and a bit).

        Raises:
            EdgefleetError: another agent runs on the same root.
        """
        with file_lock(self.config.root / AGENT_LOCK_FILE, timeout_s=self.config.drain_timeout_s + LOCK_MARGIN_S,
                       what=f"agent root {self.config.root} (another edgefleet-agent runs on it)"):
            link_runtime_files(self.config.root, self.config.runtime_path)  # before the first status
            return self._run(stop)

    def _run(self, stop: threading.Event) -> int:
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(self.config.inference.gil_switch_interval_s)
        try:
            return self._run_stages(stop)
        finally:
            sys.setswitchinterval(switch_interval)

    def _start_telemetry(self) -> None:
        """Starts telemetry; a failure (the spool cannot open) is reported in the status, never fatal: inference
        does not depend on telemetry. A sink that cannot open (no credentials) does not even fail the start:
        the publisher retries it with backoff while the spool fills."""
        try:
            self.telemetry.start()
        except Exception as error:  # noqa: BLE001 - whatever it is, the device keeps inferring
            message = f"{error.message} (fix: {error.fix})" if isinstance(error, EdgefleetError) else repr(error)
            self._telemetry_off = f"telemetry is off for this run: {message}"
            log.error("%s; inference goes on", self._telemetry_off)

    def _run_stages(self, stop: threading.Event) -> int:
        self._start_telemetry()
        self.write_status()  # "starting": loading the first model may take a while (the Edge TPU probe)
        self.watcher.check_once()  # load the current model before the first frame, if there is one
        stages = [
            threading.Thread(target=self._capture, args=(stop,), name="capture", daemon=True),
            threading.Thread(target=self._infer, args=(stop,), name="inference", daemon=True),
        ]
        if self.shadow.enabled:
            stages.append(threading.Thread(target=self.shadow.run, args=(stop,), name="shadow", daemon=True))
        if self.spot_check is not None:
            stages.append(threading.Thread(target=self.spot_check.run, args=(stop,), name="spot-check", daemon=True))
        watch = threading.Thread(target=self.watcher.run, args=(stop,), name="model-watch", daemon=True)
        poller = self._start_poller()
        for thread in (*stages, watch):
            thread.start()
        self._state = "running" if self._state != "failed" else "failed"
        self._notifier.ready()
        schedule = StatusSchedule(self.config.status.interval_s)
        try:
            while not stop.is_set() and not self._inference_done.is_set():
                status, now = self.status(), time.monotonic()
                self._notifier.tick(status.frames + status.errors, self._inferring, now)
                if schedule.due(status, now):  # a change a reader acts on, or the interval is up
                    write_status(self.config.status_written_path, status)
                    schedule.written(status, now)
                stop.wait(self.config.status.check_interval_s)
        finally:
            self._state = "stopping" if self._state != "failed" else "failed"
            self._notifier.stopping()
            stop.set()
            self.write_status()
            self._stop_in_order(stages, watch, poller)
            if self._active is not None:
                self._active.engine.close()
            if self._source is not None:
                self._source.close()
            final = "failed" if self._state == "failed" else "stopped"
            self._state = final
            self.write_status()
        return 1 if self._state == "failed" else 0

    def _stop_in_order(self, stages: list[threading.Thread], watch: threading.Thread,
                       poller: ChannelPoller | None) -> None:
        """The frame stages first (one deadline, `drain_timeout_s`, for all of them), then telemetry, which spools
        its last window (with the shadow's last pairs) and the `stopped` event before anything slow: the model
        watch preparing a version and the poller in a download may take longer than systemd waits
        (`TimeoutStopSec`), and what is spooled survives a SIGKILL."""
        deadline = time.monotonic() + self.config.drain_timeout_s
        for thread in stages:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.telemetry.stop(self.config.drain_timeout_s)
        self.shadow.close()
        watch.join(self.config.drain_timeout_s)
        if poller is not None:
            poller.stop()  # waits for a poll under way (up to its own stop timeout)
        self.watcher.close_all()

    def _spot_checker(self) -> SpotChecker | None:
        """The labelled spot check (issue 25), when the config opts in; uploads with the device's credentials and
        signs each sample with the device's identity key (made on first start; a key file the agent cannot use
        stops the agent here, naming the file)."""
        uri = self.config.spot_check_registry
        if not self.config.spot_check.enabled or uri is None:
            return None
        from edgefleet.device.registry import open_registry_reader
        from edgefleet.device.spotcheck.runner import SpotChecker

        return SpotChecker(self.config.spot_check, self.config.device_id, self.config.root,
                           functools.partial(open_registry_reader, uri, credentials_file=self.config.credentials_file),
                           sign=functools.partial(sign_spot_sample, load_or_create_device_key(self.config.root)),
                           run_started=self._started_at)

    def _on_refusal(self, result: PullResult) -> None:
        """Pull mode: a refused version (or channel pointer) becomes a telemetry event."""
        self.telemetry.record_event("error" if result.pointer_problem else "swap_failed", result.reason,
                                    model_version=result.version)

    def _start_poller(self) -> ChannelPoller | None:
        """Pull mode: follows the registry channel in the poller's own low-priority thread."""
        if not self.config.registry.uri:
            return None
        from edgefleet.device.poller import ChannelPoller
        from edgefleet.device.registry import open_registry_reader

        poller = ChannelPoller(
            open_registry_reader(self.config.registry.uri, credentials_file=self.config.credentials_file),
            self.store, self.config.model,
            self.config.registry.channel, self.config.public_key_path,
            interval_s=self.config.registry.poll_interval_s,
            on_refusal=self._on_refusal,
            require_signed=self.config.registry.require_signed_pointers,
            device_id=self.config.device_id,
            window=self.config.registry.window,
            jitter=self.config.registry.poll_jitter,
            shadow=self.shadow.enabled,
            on_thread_start=functools.partial(lower_thread_priority, self.config.swap.background_nice),
        )
        self._poller = poller
        return poller.start()
