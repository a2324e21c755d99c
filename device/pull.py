"""Pull mode: follow a registry channel, and download, verify, install and activate what it names.

`pull_channel_once` does one round; `ChannelPoller` runs it on a thread every `interval_s` seconds. A
version that fails verification (tampered or damaged registry object, wrong key, a manifest that is not the
one the channel names) is refused: nothing is activated, the store is unchanged, and the refusal is recorded
in the store (`ModelStore.mark_refused`) so it is not downloaded again at every poll. The running agent uses
the same record for a version that fails its smoke test, so pull mode does not re-activate it.

Errors: registry and store problems that may pass (network down, emulator restarting, a lock held) are
*transient*: the poller logs them and tries again at the next interval. Anything else is *unexpected*: it
is logged with its traceback and counted, and polling continues.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from edgefleet.device.bundle import sha256_file, verify_manifest_bytes
from edgefleet.device.channel import (
    RECORD_FILE,
    ChannelRecord,
    accepted,
    judge_pointer,
    parse_record,
    record_bytes,
    verify_pointer,
)
from edgefleet.device.registry.base import RegistryReader
from edgefleet.device.store import ModelStore
from edgefleet.kernel.contracts.layout import MANIFEST_FILE
from edgefleet.kernel.contracts.manifest import ChannelPointer
from edgefleet.kernel.errors import EdgefleetError, RegistryError, StoreError, VerificationError
from edgefleet.kernel.signing import PublicKeyLike, resolve_public_key

log = logging.getLogger(__name__)

Outcome = Literal[
    "activated", "unchanged", "no_channel", "refused", "previously_refused", "pointer_refused", "expired"
]
"""`pointer_refused`: the channel pointer itself was refused (bad signature, replayed, a lower version that
is not a signed downgrade, unsigned after signed); `expired`: the signed pointer expired. Both keep the
device on what it runs and record nothing as refused (a newer valid pointer is taken at the next poll)."""
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (RegistryError, StoreError, OSError)
"""Errors a poll may hit that can pass by themselves (the next poll tries again)."""


class PullSettings(BaseModel):
    """Pull-mode settings (the agent config embeds these)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    interval_s: float = Field(default=30.0, gt=0, description="seconds between two polls of the channel")
    stop_timeout_s: float = Field(default=10.0, gt=0, description="wait for a running poll when stopping")


class PullResult(NamedTuple):
    """What one pull round did."""

    changed: bool
    """True when a new version was activated."""
    version: str | None
    """The version the channel names (None when the channel is not set)."""
    reason: str
    """Human-readable: what happened, or why the version was refused."""
    outcome: Outcome = "unchanged"
    previous: str | None = None
    """The version that was current before this round."""

    @property
    def refused(self) -> bool:
        """True when this round refused the version (not for one refused earlier)."""
        return self.outcome == "refused"

    @property
    def pointer_problem(self) -> bool:
        """True when the channel pointer was refused or expired (the device stays where it is)."""
        return self.outcome in ("pointer_refused", "expired")


def pull_channel_once(
    registry: RegistryReader,
    store: ModelStore,
    model: str,
    channel: str,
    public_key: PublicKeyLike | None = None,
    *,
    retry_refused: bool = False,
    require_signed: bool = False,
    now: datetime | None = None,
) -> PullResult:
    """Brings the store's current version of `model` to what `channel` names, if it verifies.

    Steps: read the pointer and judge it (`edgefleet.device.channel`: signature, counter, expiry, version
    floor); if it names the current version, nothing to do; if that version (with that
    manifest sha256) was refused before, skip it (unless `retry_refused`); else read the manifest from the
    registry, check its sha256 against the pointer and its signature, download into a staging directory
    inside the store, verify every file, install and activate.

    Args:
        registry: where the channel lives.
        store: the device's model store.
        model, channel: what to follow.
        public_key: the release public key; default the store's (`<root>/keys/release.pub`).
        retry_refused: try a previously refused version again.
        require_signed: refuse unsigned (schema 1) pointers even before a signed one was seen.
        now: the time to judge expiry by (default: the clock).

    Returns:
        The result; `outcome == "refused"` when verification failed (the store is then unchanged).

    Raises:
        RegistryError: the registry cannot be read (transient: try again later).
        StoreError: the store cannot be changed right now (e.g. another writer holds its lock).
    """
    # A missing or unreadable key is this device's setup problem, not the release's: it raises here,
    # before anything could be recorded as refused.
    key = public_key if public_key is not None else store.public_key
    resolve_public_key(key)
    pointer = registry.read_channel(model, channel).pointer
    current = store.current(model)
    current_version = current.version if current else None
    if pointer is None:
        return PullResult(
            False,
            None,
            f"channel {channel} of model {model} is not set in {registry.uri}",
            "no_channel",
            current_version,
        )
    version = pointer.version
    record = parse_record(store.read_model_file(model, RECORD_FILE), source=f"{store.root} {model} {RECORD_FILE}")
    problem = _pointer_problem(pointer, record, key, registry, require_signed, now or datetime.now(timezone.utc))
    if problem is not None:
        outcome, reason = problem
        log.warning("%s %s/%s from %s: %s", outcome.replace("_", " "), model, channel, registry.uri, reason)
        return PullResult(False, version, reason, outcome, current_version)
    if (
        current is not None
        and current.version == version
        and current.manifest_sha256 == pointer.manifest_sha256
    ):
        _remember(store, model, record, pointer)
        return PullResult(
            False, version, f"{model} {version} is already current", "unchanged", current_version
        )
    refusal = store.refusal(model, version, pointer.manifest_sha256)
    if refusal is not None and not retry_refused:
        return PullResult(
            False,
            version,
            f"{model} {version} was refused earlier: {refusal.reason}",
            "previously_refused",
            current_version,
        )

    def refuse(reason: str) -> PullResult:
        store.mark_refused(model, version, pointer.manifest_sha256, reason)
        log.warning("refused %s %s from %s channel %s: %s", model, version, registry.uri, channel, reason)
        return PullResult(False, version, reason, "refused", current_version)

    try:
        installed = store.installed(model, version)
        if installed is not None and installed.manifest_sha256 != pointer.manifest_sha256:
            return refuse(
                f"the installed {model} {version} has manifest sha256 {installed.manifest_sha256[:16]}..., "
                f"channel {channel} names {pointer.manifest_sha256[:16]}...: versions are immutable, so "
                "one of them was altered"
            )
        if installed is None:
            signed = registry.read_manifest(model, version)
            if signed.manifest_sha256 != pointer.manifest_sha256:
                return refuse(
                    f"the manifest of {model} {version} in {registry.uri} has sha256 "
                    f"{signed.manifest_sha256[:16]}..., channel {channel} names "
                    f"{pointer.manifest_sha256[:16]}...: the manifest was replaced after promotion"
                )
            verify_manifest_bytes(
                signed.raw, signed.signature, key, source=f"{registry.uri} {model} {version} {MANIFEST_FILE}"
            )
            with store.staging_dir() as staging:
                download_dir = staging / version
                registry.download_version(model, version, download_dir)
                downloaded_sha = sha256_file(download_dir / MANIFEST_FILE)
                if downloaded_sha != pointer.manifest_sha256:
                    return refuse(
                        f"the downloaded manifest of {model} {version} has sha256 {downloaded_sha[:16]}..., "
                        f"channel {channel} names {pointer.manifest_sha256[:16]}..."
                    )
                store.install(download_dir, key)
        store.activate(model, version, key)
        _remember(store, model, record, pointer)
        if refusal is not None:  # retried on request and it verified this time: forget the refusal
            store.clear_refused(model)
    except VerificationError as error:
        return refuse(f"{error.message}" + (f" (fix: {error.fix})" if error.fix else ""))
    log.info(
        "pulled %s %s from %s channel %s (was %s)", model, version, registry.uri, channel, current_version
    )
    return PullResult(
        True,
        version,
        f"activated {model} {version} from channel {channel} (was {current_version or 'none'})",
        "activated",
        current_version,
    )


def _pointer_problem(
    pointer: ChannelPointer,
    record: ChannelRecord,
    key: PublicKeyLike,
    registry: RegistryReader,
    require_signed: bool,
    now: datetime,
) -> tuple[Outcome, str] | None:
    """("pointer_refused" | "expired", reason) when the pointer must not be followed, else None."""
    if pointer.signed:
        try:
            verify_pointer(key, pointer, source=f"{registry.uri} {pointer.model}/{pointer.channel}")
        except VerificationError as error:
            return "pointer_refused", error.message
    judgement = judge_pointer(pointer, record, now=now, require_signed=require_signed)
    if judgement.verdict == "refuse":
        return "pointer_refused", judgement.reason
    if judgement.verdict == "expired":
        return "expired", judgement.reason
    return None


def _remember(store: ModelStore, model: str, record: ChannelRecord, pointer: ChannelPointer) -> None:
    updated = accepted(record, pointer)
    if updated != record:
        store.write_model_file(model, RECORD_FILE, record_bytes(updated))


class PollerStatus(NamedTuple):
    """Counters and the last result of a `ChannelPoller` (for the agent's status file)."""

    polls: int
    changes: int
    refusals: int
    transient_errors: int
    unexpected_errors: int
    last_result: PullResult | None
    last_error: str | None
    last_poll_at: datetime | None


@dataclass
class _Counters:
    polls: int = 0
    changes: int = 0
    refusals: int = 0
    transient_errors: int = 0
    unexpected_errors: int = 0
    last_result: PullResult | None = None
    last_error: str | None = None
    last_poll_at: datetime | None = None


class ChannelPoller:
    """Calls `pull_channel_once` on a background thread every `interval_s` seconds.

    Callbacks run on the poller thread; an exception in one is logged and does not stop polling.

    Args:
        registry, store, model, channel, public_key: as for `pull_channel_once`.
        interval_s: seconds between polls (default `PullSettings().interval_s`).
        on_change: called with the PullResult when a new version was activated.
        on_refusal: called with the PullResult when a version was refused, or when the channel pointer was
            refused or expired (`result.pointer_problem`; once per distinct problem, not at every poll).
        require_signed: refuse unsigned (schema 1) channel pointers.
        on_error: called with (exception, transient) when a poll failed.
        settings: interval and stop timeout (interval_s overrides settings.interval_s).

    Example:
        with ChannelPoller(registry, store, "birds", "stable", on_change=reload_model) as poller:
            ...  # polls until the block ends
    """

    def __init__(
        self,
        registry: RegistryReader,
        store: ModelStore,
        model: str,
        channel: str,
        public_key: PublicKeyLike | None = None,
        *,
        interval_s: float | None = None,
        on_change: Callable[[PullResult], None] | None = None,
        on_refusal: Callable[[PullResult], None] | None = None,
        on_error: Callable[[BaseException, bool], None] | None = None,
        on_thread_start: Callable[[], None] | None = None,
        settings: PullSettings | None = None,
        require_signed: bool = False,
    ) -> None:
        self.registry = registry
        self.require_signed = require_signed
        self.store = store
        self.model = model
        self.channel = channel
        self.public_key = public_key
        self.settings = settings or PullSettings()
        self.interval_s = interval_s if interval_s is not None else self.settings.interval_s
        self.on_change = on_change
        self.on_thread_start = on_thread_start  # e.g. the agent lowers the polling thread's priority
        self.on_refusal = on_refusal
        self.on_error = on_error
        self._counters = _Counters()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> ChannelPoller:
        """Starts polling (the first poll happens at once)."""
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"pull-{self.model}-{self.channel}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops polling and waits for a running poll (up to `settings.stop_timeout_s`)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self.settings.stop_timeout_s)
            if self._thread.is_alive():
                log.warning(
                    "pull poller for %s/%s still busy after %.0f s; left to finish in the background",
                    self.model,
                    self.channel,
                    self.settings.stop_timeout_s,
                )

    def poll_now(self) -> None:
        """Wakes the poller for an immediate poll (instead of waiting for the interval)."""
        self._wake.set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def status(self) -> PollerStatus:
        """A snapshot of the counters and the last result."""
        with self._lock:
            counters = self._counters
            return PollerStatus(
                counters.polls,
                counters.changes,
                counters.refusals,
                counters.transient_errors,
                counters.unexpected_errors,
                counters.last_result,
                counters.last_error,
                counters.last_poll_at,
            )

    def run_once(self) -> PullResult | None:
        """One poll with the poller's error handling; returns None when it failed."""
        try:
            result = pull_channel_once(
                self.registry,
                self.store,
                self.model,
                self.channel,
                self.public_key,
                require_signed=self.require_signed,
            )
        except TRANSIENT_ERRORS as error:
            message = error.message if isinstance(error, EdgefleetError) else str(error)
            log.warning(
                "pull %s/%s from %s failed (will retry in %.0f s): %s",
                self.model,
                self.channel,
                self.registry.uri,
                self.interval_s,
                message,
            )
            self._record(None, message, transient=True)
            self._callback(self.on_error, error, True)
            return None
        except Exception as error:  # noqa: BLE001 - a poller must survive bugs; they are logged and counted
            log.exception(
                "unexpected error pulling %s/%s from %s", self.model, self.channel, self.registry.uri
            )
            self._record(None, f"{type(error).__name__}: {error}", transient=False)
            self._callback(self.on_error, error, False)
            return None
        before = self.status().last_result
        self._record(result, None, transient=False)
        if result.changed:
            self._callback(self.on_change, result)
        elif result.refused:
            self._callback(self.on_refusal, result)
        elif result.pointer_problem and (
            before is None or (before.outcome, before.reason) != (result.outcome, result.reason)
        ):
            self._callback(self.on_refusal, result)
        return result

    def _run(self) -> None:
        if self.on_thread_start is not None:
            self.on_thread_start()
        while not self._stop.is_set():
            self.run_once()
            self._wake.wait(self.interval_s)
            self._wake.clear()

    def _record(self, result: PullResult | None, error: str | None, *, transient: bool) -> None:
        with self._lock:
            counters = self._counters
            counters.polls += 1
            counters.last_poll_at = datetime.now(timezone.utc)
            if result is not None:
                counters.last_result = result
                counters.changes += result.changed
                counters.refusals += result.refused
            elif transient:
                counters.transient_errors += 1
            else:
                counters.unexpected_errors += 1
            counters.last_error = error

    def _callback(self, callback: Callable[..., None] | None, *args: object) -> None:
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:  # noqa: BLE001 - a failing hook must not stop pulling
            log.exception("pull poller callback %r failed", callback)

    def __enter__(self) -> ChannelPoller:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
