"""Helpers of the fleet monitor tests: telemetry messages, waiting, an emulator topic, a monitor thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgefleet.kernel.contracts.telemetry import (
    Event,
    Health,
    InferenceSummary,
    ModelRef,
    ResultItem,
    TelemetryMessage,
)
from edgefleet.monitor.config import MonitorConfig
from edgefleet.monitor.ingest import Outcome

MAX_DELIVERY_ATTEMPTS = 5
WAIT_S = 60.0
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def telemetry(device_id: str, seq: int, *, at: datetime | None = None, model: str | None = "mobilenet",
              version: str = "1.0.0", latency_ms: float = 5.0, p95_ms: float | None = None, count: int = 1,
              errors: int = 0, fps: float = 30.0, event: str | None = None, event_version: str | None = None,
              detail: str = "", cpu_temp_c: float | None = 50.0, spool_depth: int = 0,
              spool_dropped: int = 0, variant: str = "edgetpu", backend: str = "edgetpu:usb:0",
              inference: bool = True) -> TelemetryMessage:
    """A valid telemetry message; `event` makes it an event message without inference summary."""
    with_inference = inference and event is None and model is not None
    return TelemetryMessage(
        device_id=device_id, seq=seq, time=at or T0 + timedelta(seconds=seq),
        kind="event" if event else ("inference" if with_inference else "summary"),
        model=ModelRef(name=model, version=version, variant=variant, backend=backend) if model else None,
        inference=InferenceSummary(count=count, errors=errors, latency_ms_p50=latency_ms,
                                   latency_ms_p95=latency_ms if p95_ms is None else p95_ms,
                                   latency_ms_max=max(latency_ms, p95_ms or 0.0), fps=fps, window_s=0.0,
                                   top=[ResultItem(id=1, label="cat", score=0.9)]) if with_inference else None,
        health=Health(cpu_temp_c=cpu_temp_c, uptime_s=100.0 + seq, mem_total_mb=1024.0, mem_available_mb=600.0,
                      load_1m=0.5, tpu_present=variant == "edgetpu", spool_depth=spool_depth,
                      spool_dropped=spool_dropped),
        event=Event(kind=event, detail=detail, model_version=event_version) if event else None,
    )


def wait_until(predicate: Callable[[], object], what: str | Callable[[], str],
               timeout_s: float = WAIT_S) -> object:
    """Polls `predicate` until truthy; fails the test naming `what` (text, or a function giving it, called
    at the timeout to describe the state) after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    described = what() if callable(what) else what
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {described}")


@dataclass
class FleetKeys:
    """Device keys as the fleet has them: each device's own key, made at its first message and registered in
    a registry directory (what the monitor's `identity.registry` reads), as deploy-agent registers them."""

    registry: Path
    keys: dict[str, Ed25519PrivateKey] = field(default_factory=dict)
    enrolment: Ed25519PrivateKey = field(default_factory=lambda: Ed25519PrivateKey.generate())
    """The fleet enrolment key: it signs the device key records (the monitor lists its public half)."""

    def __post_init__(self) -> None:
        # The registry exists before any device enrols, as `edgefleet local up` / `pulumi up` make it: a monitor
        # that cannot read it refuses to start (issue 22).
        self.registry.mkdir(parents=True, exist_ok=True)

    @property
    def enrolment_public(self) -> Path:
        """The enrolment key's public key file (written on first use): the monitor's identity.enrolment_keys."""
        from edgefleet.kernel.trust.signatures import save_public_key

        path = self.registry.with_name(self.registry.name + "-enrolment.pub")
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            save_public_key(self.enrolment.public_key(), path)
        return path

    def sign(self, data: bytes, device_id: str, epoch: int = 1) -> dict[str, str]:
        """The `epoch` and `sig` attributes of `data` signed by `device_id`'s key."""
        from edgefleet.device.trust.device_identity import sign_telemetry
        from edgefleet.flows.registry import LocalRegistryWriter
        from edgefleet.flows.trust.device_key_records import register_device_key
        from edgefleet.kernel.trust.signatures import generate_keypair

        key = self.keys.get(device_id)
        if key is None:
            key, public_key = generate_keypair()
            register_device_key(LocalRegistryWriter(self.registry, create=True), device_id, public_key,
                                enrolment_key=self.enrolment, by="test")
            self.keys[device_id] = key
        return sign_telemetry(key, data, device_id, epoch)


@dataclass
class TelemetryTopic:
    """A topic on the emulator with a fleet-monitor subscription and its dead-letter topic/subscription."""

    project: str
    topic: str
    subscription_id: str
    subscription: str
    dead_letter_subscription: str
    publisher: object
    subscriber: object
    keys: FleetKeys | None = None

    def publish(self, message: TelemetryMessage) -> str:
        """Publishes `message` as its device's agent does: signed by the device's own key (with `keys`)."""
        data = message.to_json_bytes()
        signature = self.keys.sign(data, message.device_id) if self.keys is not None else {}
        return self.publisher.publish(self.topic, data, **message.attributes(), **signature).result(30)

    def publish_raw(self, data: bytes, **attributes: str) -> str:
        return self.publisher.publish(self.topic, data, **attributes).result(30)

    def dead_lettered(self) -> list:
        response = self.subscriber.pull(subscription=self.dead_letter_subscription, max_messages=100, timeout=30)
        if response.received_messages:
            self.subscriber.acknowledge(subscription=self.dead_letter_subscription,
                                        ack_ids=[m.ack_id for m in response.received_messages])
        return [m.message for m in response.received_messages]


@dataclass
class RunningMonitor:
    """`run_monitor` on a thread; `stop()` returns its report."""

    config: MonitorConfig
    kwargs: dict = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)

    def __post_init__(self) -> None:
        from edgefleet.monitor.service import run_monitor

        self.stop_event = threading.Event()
        self.result: list = []
        self.error: list[BaseException] = []

        def target() -> None:
            try:
                self.result.append(run_monitor(self.config, self.stop_event, on_batch=self._on_batch,
                                               **self.kwargs))
            except BaseException as error:  # noqa: BLE001 - handed to the test thread
                self.error.append(error)

        self.thread = threading.Thread(target=target, name="test-monitor", daemon=True)
        self.thread.start()

    def _on_batch(self, outcomes: Sequence[Outcome]) -> None:
        self.outcomes.extend(outcomes)

    def stop(self):
        self.stop_event.set()
        self.thread.join(WAIT_S)
        if self.thread.is_alive():
            raise AssertionError("the monitor did not stop within the timeout")
        if self.error:
            raise self.error[0]
        return self.result[0]
