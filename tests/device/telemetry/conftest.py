"""Fixtures of the telemetry tests: a TCP proxy that can cut the agent off, a continuous puller, builders.

The proxy is a real TCP forwarder between the agent's publisher and the real emulator. Cutting it closes the
agent's connections and refuses new ones: at the TCP level exactly what the agent sees when Pub/Sub goes
away. Tests use it where they must change the emulator (recreate a topic and its subscription) without the
agent publishing in between: a message published to a topic that has no subscription yet is discarded by
Pub/Sub, which would be the test's loss, not the agent's.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone

import pytest
from google.api_core import exceptions as google_errors
from pydantic import ValidationError

from edgefleet.kernel.contracts.telemetry import Health, ModelRef, TelemetryMessage
from edgefleet.local.emulators import free_port

log = logging.getLogger(__name__)

WAIT_TIMEOUT_S = 60.0
PROJECT = "edgefleet-test"
MODEL = ModelRef(name="mobilenet", version="1.2.3", variant="cpu", backend="cpu")
_BUFFER = 65536


def wait_until(
    predicate: Callable[[], bool], timeout_s: float = WAIT_TIMEOUT_S, what: str = "condition"
) -> None:
    """Polls `predicate` until it holds; fails the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.05)


def message_build(
    device_id: str = "dev-1", model: ModelRef | None = MODEL
) -> Callable[[int], TelemetryMessage]:
    """A spool `build` callable making a small valid inference message."""

    def build(seq: int) -> TelemetryMessage:
        return TelemetryMessage(
            device_id=device_id,
            seq=seq,
            time=datetime.now(timezone.utc),
            kind="event",
            model=model,
            health=Health(uptime_s=float(seq)),  # content a test can check per message
        )

    return build


# --- TCP proxy ----------------------------------------------------------------------------------------------
class TcpProxy:
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`target_port`; `cut()` and `restore()` a network partition."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def restore(self) -> None:
        """Starts (again) accepting and forwarding connections on the same port."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self._listener = listener
        thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        thread.start()
        self._threads.append(thread)

    def cut(self) -> None:
        """Refuses new connections and resets the open ones."""
        if self._listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone would leave it listening.
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            connection.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut(): the listener was closed
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()  # emulator down: the agent sees its connection reset
                continue
            with self._lock:
                self._connections += [client, upstream]
            thread = threading.Thread(target=self._pump, args=(client, upstream), daemon=True)
            thread.start()

    @staticmethod
    def _pump(client: socket.socket, upstream: socket.socket) -> None:
        selector = selectors.DefaultSelector()
        selector.register(client, selectors.EVENT_READ, upstream)
        selector.register(upstream, selectors.EVENT_READ, client)
        try:
            while True:
                for key, _ in selector.select(timeout=1.0):
                    data = key.fileobj.recv(_BUFFER)
                    if not data:
                        return
                    key.data.sendall(data)
        except (OSError, ValueError):
            return  # cut() closed the sockets
        finally:
            selector.close()
            client.close()
            upstream.close()


# --- Pub/Sub admin and a continuous puller ----------------------------------------------------------------
def create_topic_and_subscription(topic_id: str, subscription_id: str) -> tuple[str, str]:
    """Creates both on the emulator named by PUBSUB_EMULATOR_HOST (fresh clients: fresh connections)."""
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topic = publisher.topic_path(PROJECT, topic_id)
    subscription = subscriber.subscription_path(PROJECT, subscription_id)
    publisher.create_topic(name=topic, timeout=WAIT_TIMEOUT_S)
    subscriber.create_subscription(name=subscription, topic=topic, timeout=WAIT_TIMEOUT_S)
    publisher.transport.close()
    subscriber.close()
    return topic, subscription


class Puller:
    """Pulls a subscription continuously from a thread, recording every message (validated) it sees."""

    def __init__(self, subscription: str) -> None:
        self.subscription = subscription
        self.messages: list[tuple[TelemetryMessage, dict[str, str]]] = []
        self.seqs: set[int] = set()
        self.errors = 0
        self.invalid: list[tuple[bytes, ValidationError]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._client = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Puller:
        self.reconnect()
        self._thread.start()
        return self

    def reconnect(self) -> None:
        """A new client (after the emulator restarted: the old channel may wait out gRPC's backoff)."""
        from google.cloud import pubsub_v1

        with self._lock:
            old, self._client = self._client, pubsub_v1.SubscriberClient()
        if old is not None:
            old.close()

    def received(self) -> set[int]:
        with self._lock:
            return set(self.seqs)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                client = self._client
            try:
                response = client.pull(
                    subscription=self.subscription, max_messages=1000, timeout=2.0, retry=None
                )
            except (google_errors.GoogleAPICallError, ValueError):  # emulator down or restarting
                self.errors += 1
                self._stop.wait(0.1)
                continue
            if not response.received_messages:
                continue
            batch = []
            for received in response.received_messages:
                try:
                    message = TelemetryMessage.from_json_bytes(received.message.data)
                except ValidationError as error:
                    self.invalid.append((received.message.data, error))
                    continue
                batch.append((message, dict(received.message.attributes)))
            with self._lock:
                self.messages.extend(batch)
                self.seqs.update(message.seq for message, _ in batch)
            try:
                client.acknowledge(
                    subscription=self.subscription,
                    ack_ids=[received.ack_id for received in response.received_messages],
                    timeout=2.0,
                    retry=None,
                )
            except google_errors.GoogleAPICallError:
                self.errors += 1  # redelivered later: a duplicate, which is allowed

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(WAIT_TIMEOUT_S)
        if self._client is not None:
            self._client.close()


@pytest.fixture
def tcp_proxy_factory() -> Iterator[Callable[[int], TcpProxy]]:
    proxies: list[TcpProxy] = []

    def make(target_port: int) -> TcpProxy:
        proxy = TcpProxy(target_port)
        proxy.restore()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.cut()


@pytest.fixture
def wait() -> Callable[..., None]:
    """`wait(predicate, timeout_s=..., what=...)`: polls until it holds, fails the test on timeout."""
    return wait_until


@pytest.fixture
def build_message() -> Callable[..., Callable[[int], TelemetryMessage]]:
    """`build_message(device_id='dev-1', model=MODEL)`: a spool `build` callable for a small valid message."""
    return message_build


@pytest.fixture
def make_topic() -> Callable[[str, str], tuple[str, str]]:
    """`make_topic(topic_id, subscription_id)` on the emulator named by PUBSUB_EMULATOR_HOST."""
    return create_topic_and_subscription


@pytest.fixture
def puller_factory() -> Iterator[Callable[[str], Puller]]:
    """`puller_factory(subscription)`: a started Puller, stopped after the test."""
    pullers: list[Puller] = []

    def make(subscription: str) -> Puller:
        puller = Puller(subscription).start()
        pullers.append(puller)
        return puller

    yield make
    for puller in pullers:
        puller.stop()
