"""Model watch and hot swap: load and smoke-test a new version beside the running one, then hand it over.

The watcher runs in its own thread. The inference stage only ever does `slot.take()` between frames (an
attribute read under a lock), so loading, verifying and smoke-testing a model never delays a frame.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Optional

from edgefleet.device.agent.config import AgentConfig, InferenceConfig
from edgefleet.device.runtime.config import RuntimeConfig
from edgefleet.device.runtime.engine import Engine, open_for_manifest
from edgefleet.device.runtime.golden import check_golden
from edgefleet.device.runtime.interpreter import check_device
from edgefleet.device.runtime.probe import ProbeOutcome, probe_edgetpu
from edgefleet.device.runtime.tpu_access import EdgeTpuAccess
from edgefleet.device.store import ModelStore
from edgefleet.device.store_reader import InstalledVersion
from edgefleet.device.trust.version_bundle import verify_version_dir
from edgefleet.kernel.contracts.layout import CURRENT_POINTER, SIGNATURE_FILE
from edgefleet.kernel.contracts.manifest import Manifest
from edgefleet.kernel.contracts.telemetry import EventKind, ModelRef
from edgefleet.kernel.errors import EdgefleetError, NoEdgeTpuError
from edgefleet.kernel.trust.release_keyring import UnknownKeyError, keyring_stamp, load_keyring

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ActiveModel:
    """A verified, smoke-tested model ready to run (or running)."""

    version: str
    path: Path
    manifest: Manifest
    engine: Engine
    edgetpu: ProbeOutcome | None = None  # the Edge TPU probe for this version, when it has an edgetpu variant

    @functools.cached_property
    def ref(self) -> ModelRef:  # built once: the inference stage passes it with every result
        return ModelRef(name=self.manifest.model, version=self.version, variant=self.engine.variant,
                        backend=self.engine.backend)

    @property
    def detector(self) -> bool:
        return self.manifest.task == "detection"


class ModelSlot:
    """Hands a new model from the watcher thread to the inference stage.

    `offer()` puts a candidate; the inference stage calls `take()` between frames and swaps when it gets one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: ActiveModel | None = None
        self._taken = threading.Event()

    def offer(self, candidate: ActiveModel) -> None:
        with self._lock:
            self._pending = candidate
            self._taken.clear()

    def take(self) -> ActiveModel | None:
        if self._pending is None:  # the common case, no lock needed to read a reference
            return None
        with self._lock:
            candidate, self._pending = self._pending, None
        self._taken.set()
        return candidate

    def taken_since_offer(self) -> bool:
        """True when the last offered model was taken (so the one before it is no longer in use)."""
        return self._taken.is_set()


class EdgeTpuUnavailableError(NoEdgeTpuError):
    """The Edge TPU is unusable here and the version may not run on the CPU: the agent idles.

    Not a fault of the release (it is not refused): the host needs the fix.
    """

    def __init__(self, outcome: ProbeOutcome, why: str) -> None:
        super().__init__(f"{outcome.summary()}; {why}", outcome.fix)
        self.outcome = outcome


def choose_device(inference: InferenceConfig, version_dir: Path, manifest: Manifest, *,
                  probe: Callable[..., ProbeOutcome] = probe_edgetpu) -> tuple[str, ProbeOutcome | None]:
    """Where a verified version runs: the configured device once its edgetpu variant passed the probe (a child
    process: delegate, interpreter, one invoke), else the CPU (its cpu variant) unless the TPU is required.
    The agent passes `EdgeTpuAccess.outcome` as `probe`: no child while this process holds the TPU.

    Returns:
        (device for `open_for_manifest`, the probe's outcome or None when no probe was needed).

    Raises:
        EdgeTpuUnavailableError: the probe failed and `require_edgetpu` is set.
    """
    if inference.device == "cpu" or "edgetpu" not in manifest.variants:
        return inference.device, None
    outcome = probe(version_dir / manifest.variants["edgetpu"], device=check_device(inference.device),
                    library=inference.edgetpu_library, timeout_s=inference.probe_timeout_s)
    if outcome.ok:
        return inference.device, outcome
    if inference.require_edgetpu:  # (every release has a cpu variant: the manifest contract says so)
        raise EdgeTpuUnavailableError(outcome, "inference.require_edgetpu is true: not running the CPU variant")
    return "cpu", outcome


def opened_where_probed(outcome: ProbeOutcome | None, engine: Engine) -> ProbeOutcome | None:
    """The outcome as it turned out: a usable TPU whose delegate then did not open in this process (another
    process took the TPU since it was proven) is an error, so the status and doctor do not say it runs there."""
    if outcome is None or not outcome.ok or engine.variant == "edgetpu":
        return outcome
    return outcome.model_copy(update={
        "ok": False, "cause": "error",
        "detail": f"the Edge TPU did not open in this process ({outcome.library}): another process may hold it",
        "fix": "stop the other program using the Edge TPU (one process at a time), then restart the agent"})


class KeyringUnusable(EdgefleetError):
    """The device's own release keyring cannot be read: nothing can be verified, and no release is to blame."""


def prepare_model(config: AgentConfig, installed: InstalledVersion, *,
                  probe: Callable[..., ProbeOutcome] = probe_edgetpu) -> ActiveModel:
    """Verifies `installed` against the release key, opens it and runs its golden smoke test.

    Raises:
        EdgeTpuUnavailableError: the Edge TPU is unusable and the version may not run on the CPU.
        KeyringUnusable: the device's release keyring cannot be read (its setup, not the release's fault).
        UnknownKeyError: signed by a key the keyring does not hold (yet): never the release's fault either.
        EdgefleetError: VerificationError, ModelError/NoEdgeTpuError, or a failed smoke test, each naming the
            version and what to do.
    """
    try:
        public_key = load_keyring(config.public_key_path)
    except EdgefleetError as error:
        raise KeyringUnusable(error.message, error.fix) from error
    manifest = verify_version_dir(installed.path, public_key, refuse_development=config.refuse_development_keys)
    device, outcome = choose_device(config.inference, installed.path, manifest, probe=probe)
    engine = open_for_manifest(installed.path, manifest, device=device,
                               num_threads=config.inference.num_threads, top_k=config.inference.top_k,
                               score_threshold=config.inference.score_threshold,
                               config=RuntimeConfig(edgetpu_library=config.inference.edgetpu_library))
    outcome = opened_where_probed(outcome, engine)
    if outcome is not None and not outcome.ok and config.inference.require_edgetpu:
        engine.close()
        raise EdgeTpuUnavailableError(outcome, "inference.require_edgetpu is true: not running the CPU variant")
    try:
        check = check_golden(engine, manifest)
    except Exception:
        engine.close()
        raise
    if not check.passed:
        engine.close()
        raise EdgefleetError(
            f"model {manifest.model} {manifest.version} failed its smoke test: {check.detail}",
            "the model does not reproduce the golden outputs in its manifest; rebuild or re-release it")
    return ActiveModel(installed.version, installed.path, manifest, engine, outcome)


def lower_thread_priority(increment: int) -> None:
    """Makes the calling thread nicer by `increment` (Linux schedules threads as tasks; elsewhere a no-op)."""
    if increment <= 0 or not hasattr(os, "setpriority"):
        return
    thread_id = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, thread_id)
        os.setpriority(os.PRIO_PROCESS, thread_id, min(19, current + increment))
    except OSError as error:  # not permitted in some containers: run at normal priority
        log.debug("could not lower the priority of thread %d: %s", thread_id, error)


# The telemetry event for an unusable Edge TPU (telemetry schema 2), beside the log and the status file
# (`edgetpu_unavailable`): not an `error` event, which would mark the device failing in the fleet monitor
# although it runs its CPU variant.
EDGETPU_UNAVAILABLE_EVENT: Final = "edgetpu_unavailable"
TrustStamp = tuple[object, ...]  # compared for equality only (`_trust_stamp`)
# (kind, detail, model_version, from_version)
EventSink = Callable[[EventKind, str, Optional[str], Optional[str]], None]


class ModelWatcher:
    """Watches the store's `current` pointer and swaps models in; refuses and rolls back bad ones.

    Args:
        config: agent configuration (model name, key, inference options, watch interval).
        store: the device's model store.
        slot: where accepted models are handed to the inference stage.
        on_event: called with ('swap' | 'swap_failed' | 'rollback', detail, version) for telemetry.
    """

    def __init__(self, config: AgentConfig, store: ModelStore, slot: ModelSlot, on_event: EventSink) -> None:
        self._config = config
        self._store = store
        self._slot = slot
        self._on_event = on_event
        self.running: ActiveModel | None = None
        self.swaps = 0
        self.failures = 0
        self.last_error: str | None = None
        self.edgetpu_unavailable: str | None = None  # why the Edge TPU is not used, when one was wanted
        self._decided: str | None = None  # the version `current` named when we last decided on it
        # Probe outcomes of this process: no probe child while it holds the TPU (it would fight us for it).
        self.tpu = EdgeTpuAccess()
        self._waiting_for_key: TrustStamp | None = None  # the keyring as it was when a version could not be verified
        self._retired: list[ActiveModel] = []  # swapped out; closed here, off the inference thread

    def close_all(self) -> None:
        """At shutdown: closes every engine this watcher opened that the agent will not close itself."""
        for retired in self._retired:
            retired.engine.close()
        self._retired.clear()
        if self.running is not None:
            self.running.engine.close()  # idempotent: the agent may close the same engine too

    def _close_retired(self) -> None:
        """Closes the engines the inference stage no longer uses (it took their successor)."""
        while self._retired and self._slot.taken_since_offer():
            self._retired.pop(0).engine.close()

    def check_once(self) -> ActiveModel | None:
        """Looks at `current` once; returns the newly accepted model (already offered), or None."""
        self._close_retired()
        # A readlink per poll; the manifest is read only when the pointer moved (it is big: golden outputs).
        pointed = self._store.pointer(self._config.model, CURRENT_POINTER)
        if self._waiting_for_key is not None and self._trust_stamp(pointed) != self._waiting_for_key:
            self._decided, self._waiting_for_key = None, None  # keyring or signatures changed: try again
        if pointed is not None and pointed == self._decided:
            return None
        installed = self._store.current(self._config.model)
        if installed is None:
            if self.running is None:
                self._report_idle(f"no version of model '{self._config.model}' is installed under "
                                  f"{self._config.root}: install one (edgefleet-agent install / pull) or roll out")
            return None
        self._decided = installed.version
        if self.running is not None and installed.path.resolve() == self.running.path.resolve():
            return None
        refusal = self._store.refusal(installed.model, installed.version, installed.manifest_sha256)
        if refusal is not None:  # refused before (maybe before a restart): not tried again
            if self.running is None:
                self._report_idle(f"{installed.model} {installed.version} is current but was refused "
                                  f"{refusal.refused_at:%Y-%m-%d %H:%M} UTC ({refusal.reason}); activate another "
                                  "version, or fix it and run `edgefleet-agent pull --retry-refused`")
            return None
        try:
            candidate = prepare_model(self._config, installed, probe=self.tpu.outcome)
        except EdgeTpuUnavailableError as error:  # the host's problem, not the release's: idle, not refused
            self._edgetpu_unavailable(error.outcome, installed.version)
            self._report_idle(str(error))
            return None
        except (UnknownKeyError, KeyringUnusable) as error:  # the device's keyring, not the release: never refused
            self._wait_for_key(installed, pointed, error)
            return None
        except EdgefleetError as error:
            self._refuse(installed, error)
            self._decided = self._store.pointer(self._config.model, CURRENT_POINTER)
            return None
        if candidate.edgetpu is not None and not candidate.edgetpu.ok:
            self._edgetpu_unavailable(candidate.edgetpu, candidate.version)
        else:
            self.edgetpu_unavailable = None
        previous = self.running
        self._slot.offer(candidate)
        self.running = candidate
        if previous is not None:
            self._retired.append(previous)
        if previous is not None:
            self.swaps += 1
            self._on_event("swap", f"{previous.version} -> {candidate.version}", candidate.version,
                           previous.version)
        self.last_error = None
        log.info("model %s %s (%s on %s) accepted", candidate.manifest.model, candidate.version,
                 candidate.engine.variant, candidate.engine.backend)
        return candidate

    def _edgetpu_unavailable(self, outcome: ProbeOutcome, version: str) -> None:
        """Reports an unusable Edge TPU: in the log, the status, and as an `edgetpu_unavailable` event."""
        self.edgetpu_unavailable = f"{outcome.summary()} (fix: {outcome.fix})" if outcome.fix else outcome.summary()
        log.error("%s", self.edgetpu_unavailable)
        self._on_event(EDGETPU_UNAVAILABLE_EVENT, self.edgetpu_unavailable, version, None)

    def _wait_for_key(self, installed: InstalledVersion, pointed: str | None, error: EdgefleetError) -> None:
        """A version this device cannot verify with its keyring (yet): nothing is recorded as refused, the running
        model (if any) keeps running, and the version is tried again once the keyring changes."""
        self._decided = pointed
        self._waiting_for_key = self._trust_stamp(pointed)
        reason = f"{installed.model} {installed.version} cannot be verified yet: {error}"
        if self.running is None:
            self._report_idle(reason)
        elif reason != self.last_error:
            log.warning("%s; still running %s", reason, self.running.version)
            self.last_error = reason

    def _trust_stamp(self, pointed: str | None) -> TrustStamp:
        """What changes when the keyring changes, or the signatures of the version `current` names (pull mode takes
        the registry's after a rotation): cheap stats, taken at each poll while a version waits for its key."""
        signatures = self._store.model_dir(self._config.model) / (pointed or "") / SIGNATURE_FILE
        try:
            info = signatures.stat()
            signed = (info.st_size, info.st_mtime_ns, info.st_ino)
        except OSError:
            signed = ()
        return keyring_stamp(self._config.public_key_path), signed

    def _report_idle(self, reason: str) -> None:
        """Says why no model runs: in the status file always, in the log once per reason."""
        if reason != self.last_error:
            log.warning("not inferring: %s", reason)
        self.last_error = reason

    def _refuse(self, installed: InstalledVersion, error: EdgefleetError) -> None:
        self.failures += 1
        self._store.mark_refused(installed.model, installed.version, installed.manifest_sha256, error.message)
        self.last_error = str(error)
        log.error("refusing model %s %s: %s", self._config.model, installed.version, error)
        self._on_event("swap_failed", error.message, installed.version, None)
        if self.running is None:
            return
        # Put the pointer back on what is running, so the device's on-disk state says what it does.
        try:
            previous = self._store.previous(self._config.model)
            if previous is not None and previous.version == self.running.version:
                self._store.rollback(self._config.model)
            else:
                self._store.activate(self._config.model, self.running.version)
            self._on_event("rollback", f"{installed.version} -> {self.running.version}", self.running.version,
                           installed.version)
        except EdgefleetError as rollback_error:
            log.error("could not restore the current pointer: %s", rollback_error)
            self.last_error = f"{error.message}; and restoring the pointer failed: {rollback_error.message}"

    def run(self, stop: threading.Event) -> None:
        """Polls until `stop` is set. Expected errors are reported; unexpected ones logged, never fatal."""
        lower_thread_priority(self._config.swap.background_nice)
        while not stop.is_set():
            try:
                self.check_once()
            except OSError as error:  # transient: a file changing under us, a full disk
                self.last_error = f"model watch: {error}"
                log.warning("model watch failed, will retry: %s", error)
            except Exception as error:  # noqa: BLE001 - the watcher must outlive a bug in one check
                self.last_error = f"model watch: unexpected {type(error).__name__}: {error}"
                log.exception("unexpected error in model watch")
            stop.wait(self._config.swap.watch_interval_s)
