"""When the Edge TPU probe may run: never while this process holds the TPU (issue 22).

The Edge TPU opens in one process at a time: a second opener gets "Failed to load delegate" on PCIe, and on USB
the process already holding it can abort. A probe child started while the agent runs its model on the TPU
therefore fights the agent for it. So the probe's outcome is kept per (libedgetpu file + mtime, runtime
version, device): while this process holds a delegate, the outcome that proved it stands and a new model opens
in-process beside the running one (delegates of one process share the TPU); only when it holds none does a
child probe run, and a crash or hang (a property of the library build with this runtime) is not tried again
until the library file or the runtime changes. A library file that changed since this process loaded it (a new
build installed, the agent not restarted) is not probed: this process would still run the build it loaded, so
the outcome says a restart takes the new one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edgefleet.device.runtime.interpreter import RESTART_FIX, holds_edgetpu, library_changed
from edgefleet.device.runtime.library_file import library_file
from edgefleet.device.runtime.probe import ProbeOutcome, probe_edgetpu, runtime_version
from edgefleet.kernel.contracts.status import EdgeTpuRecord

# Outcomes of the library build with this runtime, kept until either changes. An "error" (no TPU attached, a
# TPU another process holds, a permission) can change without either: probed again.
KEPT_CAUSES = frozenset({"ok", "crash", "hang"})
Source = Literal["in-process", "kept", "probe", "restart"]


@dataclass(frozen=True)
class ProbeKey:
    """What a probe outcome holds for: the library file (resolved path and mtime), the runtime and device."""

    library: str
    mtime_ns: int
    runtime: str
    device: str | None


def probe_key(library: str, device: str | None, runtime: str) -> ProbeKey | None:
    """The key of `library` as installed now; None when it is not found (then there is nothing to keep)."""
    file = library_file(library)
    return ProbeKey(file[0], file[1], runtime, device) if file is not None else None


def decide(held: bool, kept: ProbeOutcome | None, changed: bool = False) -> Source:
    """Where the outcome comes from: this process's proof while it holds the TPU (a child could not open it);
    a restart when the library file changed since this process loaded it (it cannot open the new build); a kept
    outcome of the same library and runtime; else a probe child."""
    if held:
        return "in-process"
    if changed:
        return "restart"
    if kept is not None and kept.cause in KEPT_CAUSES:
        return "kept"
    return "probe"


def held_outcome(kept: ProbeOutcome | None, *, library: str, device: str | None, runtime: str) -> ProbeOutcome:
    """The outcome while this process holds the TPU: the one that proved it, else that it holds it at all."""
    if kept is not None and kept.ok:
        return kept
    return ProbeOutcome(ok=True, cause="ok", library=library, device=device, runtime=runtime,
                        detail="this process holds the Edge TPU delegate (not probed in a child: it could not "
                               "open the TPU this process holds)")


class EdgeTpuAccess:
    """The probe outcomes of one process, and the probe as the agent calls it (`outcome` has the signature of
    `probe_edgetpu`, so it is passed where a probe is).

    Args:
        probe: runs the probe child (`probe_edgetpu`).
        holds: whether this process holds a delegate of a library (`holds_edgetpu`).
    """

    def __init__(self, probe: Callable[..., ProbeOutcome] = probe_edgetpu,
                 holds: Callable[[str], bool] = holds_edgetpu) -> None:
        self._probe = probe
        self._holds = holds
        self._kept: dict[ProbeKey, ProbeOutcome] = {}
        self._proven: ProbeOutcome | None = None  # the ok outcome this process opened its delegate after
        self._lock = threading.Lock()
        self.probes = 0  # probe children started (what the tests count)
        self.last: ProbeOutcome | None = None  # the latest outcome the agent acted on (its status reports it)

    def outcome(self, model_path: str | Path, *, device: str | None, library: str,
                timeout_s: float) -> ProbeOutcome:
        """The probe outcome for `model_path`'s library and device, probing in a child only when allowed."""
        runtime = runtime_version()
        key = probe_key(library, device, runtime)
        with self._lock:
            kept = self._kept.get(key) if key is not None else None
            changed = library_changed(library)
            source = decide(self._holds(library), kept, changed is not None)
            if source == "in-process":
                proof = kept if kept is not None and kept.ok else self._proven
                outcome = held_outcome(proof, library=library, device=device, runtime=runtime)
            elif source == "restart":
                outcome = ProbeOutcome(ok=False, cause="error", detail=str(changed), fix=RESTART_FIX,
                                       library=library, device=device, runtime=runtime)
            elif source == "kept" and kept is not None:
                outcome = kept
            else:
                outcome = self._probed(key, model_path, device=device, library=library, timeout_s=timeout_s)
            self.last = outcome
            return outcome

    def _probed(self, key: ProbeKey | None, model_path: str | Path, **probe_args: object) -> ProbeOutcome:
        """Runs the probe child and keeps its outcome. Caller holds the lock."""
        self.probes += 1
        outcome = self._probe(model_path, **probe_args)
        if key is not None:
            self._kept[key] = outcome
        if outcome.ok:
            self._proven = outcome
        return outcome

    def record(self, outcome: ProbeOutcome | None = None) -> EdgeTpuRecord | None:
        """The status's view: `outcome` (the running model's; default the latest) and whether this process
        holds the TPU now."""
        outcome = outcome or self.last
        if outcome is None:
            return None
        return EdgeTpuRecord(**outcome.model_dump(), held=self._holds(outcome.library))
