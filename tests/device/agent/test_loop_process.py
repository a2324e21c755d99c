"""`edgefleet-agent run` as a real process: telemetry to the real Pub/Sub emulator, SIGTERM drains and exits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import pytest
from google.cloud import pubsub_v1

from edgefleet.kernel.contracts.telemetry import TelemetryMessage

AGENT = Path(sys.executable).with_name("edgefleet-agent")
MODEL = "imagenet"


def pull_all(subscriber: pubsub_v1.SubscriberClient, subscription: str) -> list[TelemetryMessage]:
    messages: list[TelemetryMessage] = []
    while True:
        response = subscriber.pull(subscription=subscription, max_messages=500, timeout=10)
        if not response.received_messages:
            return messages
        for received in response.received_messages:
            message = TelemetryMessage.from_json_bytes(received.message.data)
            assert received.message.attributes["device_id"] == message.device_id
            messages.append(message)
        subscriber.acknowledge(subscription=subscription, ack_ids=[r.ack_id for r in response.received_messages])


class OutputReader:
    """Reads a process's output pipe to its end in a thread: the pipe never fills (a full one would block the
    agent's logging, and with it the agent), and what the process said is there to show when it fails."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self._chunks: list[bytes] = []
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe: IO[bytes]) -> None:
        for chunk in iter(lambda: pipe.read1(65536), b""):
            self._chunks.append(chunk)

    def text(self, wait_s: float = 0.0) -> str:
        self._thread.join(wait_s)
        return b"".join(self._chunks).decode(errors="replace")


@pytest.mark.slow
def test_agent_process_publishes_every_seq_and_exits_cleanly_on_sigterm(releases, pubsub_env, unique_name):
    project = pubsub_env.project
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic = publisher.create_topic(name=publisher.topic_path(project, f"telemetry-{unique_name}")).name
    subscription = subscriber.create_subscription(
        name=subscriber.subscription_path(project, f"monitor-{unique_name}"), topic=topic).name
    releases.install("1.0.0", "mobilenet_v1_0.25_128_quant.tflite")
    config = releases.tmp / "agent.yaml"
    config.write_text(
        f"device_id: cam-7\nmodel: {MODEL}\nroot: {releases.root}\n"
        f"source: {{kind: images, path: {releases.images()}}}\n"
        f"telemetry: {{mode: summary, summary_interval_s: 0.3, pubsub_project: {project}, "
        f"pubsub_topic: telemetry-{unique_name}}}\n")
    env = {**os.environ, "PUBSUB_EMULATOR_HOST": pubsub_env.host}
    process = subprocess.Popen([str(AGENT), "run", "--config", str(config)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = OutputReader(process.stdout)
    try:
        deadline = time.monotonic() + 60
        status: dict = {}
        while time.monotonic() < deadline and process.poll() is None:
            shown = subprocess.run([str(AGENT), "status", "--root", str(releases.root), "--json"],
                                   capture_output=True, text=True)
            if shown.returncode == 0:
                status = json.loads(shown.stdout)
                if status["frames"] > 20 and status["telemetry_published"] > 2:
                    break
            time.sleep(0.2)
        ended = process.poll() is not None
        assert status.get("frames", 0) > 20, (
            f"exit {process.poll()}, status {status}, output:\n{output.text(wait_s=5 if ended else 0)}")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, f"output:\n{output.text(wait_s=10)}"
    finally:
        if process.poll() is None:
            process.kill()
    final = json.loads((releases.root / "status.json").read_text())
    assert final["state"] == "stopped" and final["spool_depth"] == 0 and final["telemetry_state"] == "ok"
    messages = pull_all(subscriber, subscription)
    seqs = sorted({m.seq for m in messages})
    assert seqs == list(range(1, seqs[-1] + 1))  # no gaps
    kinds = [m.event.kind for m in sorted(messages, key=lambda m: m.seq) if m.kind == "event"]
    assert kinds[0] == "started" and kinds[-1] == "stopped"
    summaries = [m for m in messages if m.kind == "summary"]
    assert sum(m.inference.count for m in summaries) == final["frames"]  # every inference counted once
    assert {m.model.version for m in summaries if m.inference.count} == {"1.0.0"}
