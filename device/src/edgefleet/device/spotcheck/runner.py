"""The spot check in the agent: `offer` on the inference thread (O(1), never waits), the rest in its own thread.

    inference thread : SpotSampler.take (a counter, a hash, a comparison; the caps for a sampled frame) and, for
                       a frame in the sample, a `put_nowait` on a small queue (full: left out, counted)
    spot-check thread: queue -> JPEG + the model's answer (`SpotSample`), signed by the device's identity key
                       (`sign`: `device_identity.sign_spot_sample`) -> the outbox (bounded, oldest dropped)
                       and, every `upload_interval_s`, the outbox's oldest samples -> the registry bucket
                       (create-only under `spotcheck/<device_id>/`), backing off while uploads fail as
                       telemetry's publisher does (`backoff_delay`, `jittered`)

Nothing here runs unless `spot_check.enabled`: the agent then builds no `SpotChecker` at all.
"""

from __future__ import annotations

import hashlib
import io
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from edgefleet.device.registry.base import RegistryReader
from edgefleet.device.runtime.engine import ResultItem
from edgefleet.device.spotcheck.config import SpotCheckConfig
from edgefleet.device.spotcheck.outbox import OUTBOX_DIR, Outbox
from edgefleet.device.spotcheck.sampler import RateCap, SpotSampler
from edgefleet.device.spotcheck.upload import SampleRefused, upload_sample
from edgefleet.device.telemetry.publisher import backoff_delay, jittered
from edgefleet.kernel.contracts.spotcheck import SpotSample, frame_id
from edgefleet.kernel.errors import EdgefleetError

log = logging.getLogger(__name__)

QUEUE_POLL_S = 0.1  # how long the thread waits on its queue before looking at `stop` and the upload clock
BACKOFF_JITTER = 0.2


class SampledFrame(NamedTuple):
    """A frame in the sample, as the inference thread hands it over (nothing computed yet)."""

    sequence: int
    taken_s: float
    image: np.ndarray
    top: ResultItem | None
    model: str
    version: str


class SpotStats(NamedTuple):
    sampled: int
    not_sent: int
    waiting: int
    uploaded: int
    refused: int
    consecutive_failures: int
    last_error: str | None


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """The frame as a JPEG (RGB; a grey frame stays grey)."""
    buffer = io.BytesIO()
    picture = Image.fromarray(np.ascontiguousarray(image))
    if picture.mode not in ("RGB", "L"):
        picture = picture.convert("RGB")
    picture.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


class SpotChecker:
    """The labelled spot check of one agent run (see the module doc).

    Args:
        config: the `spot_check` section (enabled).
        device_id: this device.
        root: the agent root (the outbox is `<root>/spotcheck-outbox`).
        open_registry: opens the registry uploaded to (called in the spot-check thread, until it succeeds).
        sign: signs a sample record with the device's identity key (the operator takes only signed samples).
        run_started: when this run started: the run part of every frame id.
    """

    def __init__(self, config: SpotCheckConfig, device_id: str, root: Path,
                 open_registry: Callable[[], RegistryReader], *, sign: Callable[[SpotSample], SpotSample],
                 run_started: datetime | None = None) -> None:
        self.config, self.device_id, self._sign = config, device_id, sign
        self.run_started = (run_started or datetime.now(timezone.utc)).astimezone(timezone.utc)
        run = frame_id(self.run_started, 0).split("-")[0]
        self.sampler = SpotSampler(device_id, run, config.share, RateCap(config.max_per_hour, config.max_per_day))
        self.outbox = Outbox(root / OUTBOX_DIR, config.outbox_max_samples, config.outbox_max_bytes)
        self._queue: queue.Queue[SampledFrame] = queue.Queue(config.queue)
        self._open_registry = open_registry
        self._registry: RegistryReader | None = None
        self.sampled = self.queue_full = self.uploaded = self.refused = self.failures = 0
        self.last_error: str | None = None
        self._next_upload = 0.0

    # --- the inference thread: O(1), never waits ------------------------------------------------------------
    def offer(self, image: np.ndarray, results: Sequence[ResultItem], model: str, version: str) -> None:
        """A frame the model answered with `results`: handed over when it is in the sample (decided before the
        answer is looked at)."""
        sequence = self.sampler.take()
        if sequence is None:
            return
        self.sampled += 1
        try:
            self._queue.put_nowait(SampledFrame(sequence, time.time(), image, results[0] if results else None,
                                                model, version))
        except queue.Full:
            self.queue_full += 1

    # --- the spot-check thread -----------------------------------------------------------------------------
    @property
    def not_sent(self) -> int:
        """Sampled frames left out so far: capped, queue full, dropped from the outbox (oldest first)."""
        return self.sampler.capped + self.queue_full + self.outbox.dropped

    def run(self, stop: threading.Event) -> None:
        """Until `stop`: stores queued frames, uploads when due; then stores what is queued (uploaded next run)."""
        while not stop.is_set():
            try:
                self.step()
            except Exception as error:  # noqa: BLE001 - a bug in the spot check never stops the agent
                self.last_error = f"spot check: unexpected {type(error).__name__}: {error}"
                log.exception("unexpected error in the spot check")
                stop.wait(self.config.upload_interval_s)
        self.store_queued()

    def step(self, now: float | None = None) -> None:
        """One turn: at most one queued frame into the outbox, then an upload when due."""
        try:
            self.store(self._queue.get(timeout=QUEUE_POLL_S))
        except queue.Empty:
            pass
        now = time.monotonic() if now is None else now
        if now >= self._next_upload:
            self._next_upload = now + self.upload_due()

    def store_queued(self) -> None:
        """Moves every queued frame into the outbox."""
        while True:
            try:
                self.store(self._queue.get_nowait())
            except queue.Empty:
                return

    def store(self, frame: SampledFrame) -> None:
        """Encodes one sampled frame and puts it, with the model's answer, signed, in the outbox."""
        image = encode_jpeg(frame.image, self.config.jpeg_quality)
        top = frame.top
        sample = SpotSample(
            device_id=self.device_id, frame_id=frame_id(self.run_started, frame.sequence),
            captured_at=datetime.fromtimestamp(frame.taken_s, timezone.utc), model=frame.model,
            model_version=frame.version, answer_id=top.id if top else None, answer_label=top.label if top else "",
            answer_score=min(1.0, max(0.0, top.score)) if top else 0.0, share=self.config.share,
            image_sha256=hashlib.sha256(image).hexdigest(), not_sent=self.not_sent)
        sample = self._sign(sample)
        try:
            self.outbox.add(sample.frame_id, image, sample.model_dump_json(by_alias=True).encode())
        except OSError as error:
            self.last_error = f"spot check outbox {self.outbox.directory}: {error}"
            log.warning("%s", self.last_error)

    def upload_due(self) -> float:
        """Uploads up to `upload_batch` of the oldest samples; returns the seconds until the next turn (the
        interval, or the backoff after a failure)."""
        try:
            registry = self._registry = self._registry or self._open_registry()
            for frame in self.outbox.oldest(self.config.upload_batch):
                self._upload_one(registry, frame)
        except (EdgefleetError, OSError) as error:
            self.failures += 1
            self.last_error = f"spot check upload: {error}"
            log.warning("%s (retrying with backoff; %d sample(s) wait)", self.last_error, len(self.outbox))
            delay = backoff_delay(self.failures, self.config.backoff_initial_s, self.config.backoff_max_s)
            return jittered(delay, BACKOFF_JITTER)
        self.failures = 0
        return self.config.upload_interval_s

    def _upload_one(self, registry: RegistryReader, frame: str) -> None:
        try:
            image, record = self.outbox.read(frame)
        except OSError as error:  # removed or unreadable behind the agent's back: dropped, never retried forever
            self.last_error = f"spot check sample {frame} unreadable: {error}"
            log.warning("%s", self.last_error)
            self.outbox.remove(frame)
            self.outbox.dropped += 1
            return
        try:
            upload_sample(registry, self.device_id, frame, image, record)
        except SampleRefused as error:
            self.refused += 1
            self.last_error = error.message
            log.error("%s", error)
        else:
            self.uploaded += 1
        self.outbox.remove(frame)

    def stats(self) -> SpotStats:
        return SpotStats(self.sampled, self.not_sent, len(self.outbox), self.uploaded, self.refused, self.failures,
                         self.last_error)
