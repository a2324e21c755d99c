"""Many light simulated devices in one asyncio process: each polls the registry's channel pointer with jitter
(its own conditional reader) and decides with the agent's code (`behaviour.decide_poll`), and sends schema 2
telemetry built by the agent's `TelemetryBuilder`, signed with its own enrolled device key, through Pub/Sub
(the emulator in tests and benchmarks), batched by the publisher client.

    spec = FleetSpec(registry=..., project=..., topic=..., devices=enrol_fleet(writer, enrolment_key, traits))
    fleet = SimFleet(spec)
    fleet.run(stop)            # until the threading.Event `stop` is set (a thread or a process of its own)
    fleet.history              # per device: its polls and its version changes

The decisions are pure (`edgefleet.local.simfleet.behaviour`); this module only schedules and carries them out.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgefleet.device.poller import poll_delay
from edgefleet.device.registry import LocalRegistryReader
from edgefleet.device.telemetry.builder import EventRecord, MessageDraft, TelemetryBuilder
from edgefleet.device.trust.device_identity import sign_telemetry
from edgefleet.flows.registry import RegistryWriter
from edgefleet.flows.trust.device_key_records import register_device_key
from edgefleet.kernel.contracts.telemetry import Health, ModelRef
from edgefleet.kernel.trust.release_keyring import Keyring, resolve_keyring
from edgefleet.kernel.trust.signatures import generate_keypair, load_public_key
from edgefleet.local.simfleet.behaviour import PROFILES, Traits, decide_poll, first_state, window_records
from edgefleet.local.simfleet.shared_verify import shared_checks

log = logging.getLogger(__name__)

Publish = Callable[[bytes, dict[str, str]], None]
"""(message bytes, attributes) -> None: hands one message to the publisher client's batches."""

STOP_CHECK_S = 0.5
"""How often the fleet looks at its stop event."""
PUBLISH_BATCH_MESSAGES = 500
PUBLISH_BATCH_LATENCY_S = 0.05
SAMPLE_RESULTS = 3
EPOCH = 1
"""The spool epoch of every simulated device (one spool, never reset)."""
LATENESS_STEP_S = 0.1
"""Resolution of the poll lateness histogram (`SimFleet.lateness`)."""


@dataclass(frozen=True)
class SimDevice:
    device_id: str
    key: bytes
    """The device's raw Ed25519 private key (picklable: a fleet may run in a process of its own)."""
    traits: Traits


@dataclass(frozen=True)
class SimSettings:
    model: str = "imagenet"
    channel: str = "stable"
    poll_interval_s: float = 5.0
    poll_jitter: float = 0.2
    window_s: float = 5.0
    fps: float = 2.0
    profiles: dict[str, str] = field(default_factory=dict)
    """version -> profile name (`behaviour.PROFILES`); a version not named is 'good'."""
    seed: int = 0


@dataclass(frozen=True)
class FleetSpec:
    registry: str
    """A registry directory (the simulated devices read its channel pointer)."""
    public_key: str
    """The release public key file the devices verify pointers with."""
    project: str
    topic: str
    devices: tuple[SimDevice, ...]
    settings: SimSettings = SimSettings()


@dataclass
class DeviceHistory:
    polls: list[float] = field(default_factory=list)
    changes: list[tuple[float, str, str]] = field(default_factory=list)
    """(time, from version, to version) of each activation."""


def enrol_fleet(registry: RegistryWriter, enrolment_key: Ed25519PrivateKey, prefix: str,
                traits: list[Traits]) -> tuple[SimDevice, ...]:
    """A key per device, published in the registry signed by the enrolment key (what deploy-agent does)."""
    devices = []
    for index, trait in enumerate(traits):
        device_id = f"{prefix}-{index:05d}"
        key = generate_keypair()[0]
        register_device_key(registry, device_id, key.public_key(), enrolment_key=enrolment_key, by="simfleet")
        devices.append(SimDevice(device_id, key.private_bytes_raw(), trait))
    return tuple(devices)


class SimFleet:
    """The simulated devices of one `FleetSpec` (see the module doc)."""

    def __init__(self, spec: FleetSpec) -> None:
        self.spec = spec
        self.history = {device.device_id: DeviceHistory() for device in spec.devices}
        self.published = 0
        self.publish_errors = 0
        self.started = time.time()
        self.lateness: dict[int, int] = {}
        """Polls by how late they ran after their planned time, in `LATENESS_STEP_S` steps: a process that
        cannot keep up with its devices polls later and later."""

    def run(self, stop: threading.Event) -> None:
        """Runs every device until `stop` is set; then flushes the publisher."""
        from google.cloud import pubsub_v1

        publisher = pubsub_v1.PublisherClient(batch_settings=pubsub_v1.types.BatchSettings(
            max_messages=PUBLISH_BATCH_MESSAGES, max_latency=PUBLISH_BATCH_LATENCY_S))
        topic = publisher.topic_path(self.spec.project, self.spec.topic)
        try:
            asyncio.run(self._main(stop, lambda data, attrs: self._publish(publisher, topic, data, attrs)))
        finally:
            publisher.stop()

    def _publish(self, publisher: Any, topic: str, data: bytes, attributes: dict[str, str]) -> None:
        future = publisher.publish(topic, data, **attributes)
        future.add_done_callback(self._count)

    def _count(self, future: Any) -> None:
        if future.exception() is None:
            self.published += 1
        else:
            self.publish_errors += 1

    async def _main(self, stop: threading.Event, publish: Publish) -> None:
        # The devices share each signature check's outcome (`shared_verify`): one core, not 10,000.
        key = shared_checks(resolve_keyring(load_public_key(self.spec.public_key)))
        tasks = [asyncio.create_task(self._device(index, device, key, publish))
                 for index, device in enumerate(self.spec.devices)]
        while not stop.is_set():
            await asyncio.sleep(STOP_CHECK_S)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _device(self, index: int, device: SimDevice, keyring: Keyring, publish: Publish) -> None:
        settings = self.spec.settings
        rng = np.random.default_rng([settings.seed, index])
        reader = LocalRegistryReader(self.spec.registry)
        signing_key = Ed25519PrivateKey.from_private_bytes(device.key)
        source = f"{reader.uri} {settings.model}/{settings.channel}"
        pointer = reader.read_channel(settings.model, settings.channel).pointer
        assert pointer is not None, f"channel {settings.channel} of {settings.model} is not set"
        state = first_state(pointer.version, pointer.manifest_sha256)
        now = time.time()
        builder = TelemetryBuilder("summary", settings.window_s, sample_results=True, max_results=SAMPLE_RESULTS,
                                   start_time=now + float(rng.random()) * settings.window_s)
        seq, generated = 0, builder.next_deadline() - settings.window_s
        next_poll = now + float(rng.random()) * settings.poll_interval_s
        history = self.history[device.device_id]

        def send(drafts: list[MessageDraft], at: float) -> None:
            nonlocal seq
            for draft in drafts:
                seq += 1
                message = draft.build(seq, device_id=device.device_id, health=Health(uptime_s=at - self.started))
                data = message.to_json_bytes()
                publish(data, message.attributes() | sign_telemetry(signing_key, data, device.device_id, EPOCH))

        def infer(until: float) -> list[MessageDraft]:
            nonlocal generated
            profile = PROFILES[settings.profiles.get(state.version, "good")]
            records = window_records(rng, device.traits, profile, _model_ref(settings.model, state.version),
                                     start=generated, end=until, fps=settings.fps)
            generated = records[-1].time if records else generated
            return [draft for record in records for draft in builder.add_inference(record)]

        while True:
            await asyncio.sleep(max(0.0, min(next_poll, builder.next_deadline()) - time.time()))
            now = time.time()
            if now >= next_poll:
                step = int((now - next_poll) / LATENESS_STEP_S)
                self.lateness[step] = self.lateness.get(step, 0) + 1
                history.polls.append(now)
                pointer = reader.read_channel(settings.model, settings.channel).pointer
                if pointer is not None:  # no channel pointer yet: nothing to follow this poll
                    outcome = decide_poll(keyring, pointer, state, device_id=device.device_id,
                                          now=datetime.fromtimestamp(now, UTC), source=source)
                    if outcome.changed:
                        send(infer(now), now)
                        history.changes.append((now, state.version, outcome.state.version))
                        send(builder.add_event(EventRecord(now, "swap", model_version=outcome.state.version,
                                                           model=_model_ref(settings.model, outcome.state.version),
                                                           from_version=state.version)), now)
                    state = outcome.state
                next_poll = now + poll_delay(settings.poll_interval_s, settings.poll_jitter, float(rng.random()))
            if now >= builder.next_deadline():
                send(infer(now) + builder.tick(now), now)


def lateness_summary(lateness: dict[int, int]) -> tuple[float, float, float]:
    """(p50, p95, max) seconds of a `SimFleet.lateness` histogram (to its step; zeros when empty)."""
    total = sum(lateness.values())
    if not total:
        return 0.0, 0.0, 0.0
    found, seen = [], 0
    marks = iter((0.50 * total, 0.95 * total))
    mark = next(marks)
    for step in sorted(lateness):
        seen += lateness[step]
        while mark is not None and seen >= mark:
            found.append(step * LATENESS_STEP_S)
            mark = next(marks, None)
    return found[0], found[1], max(lateness) * LATENESS_STEP_S


def _model_ref(model: str, version: str) -> ModelRef:
    return ModelRef(name=model, version=version, variant="cpu", backend="cpu")
