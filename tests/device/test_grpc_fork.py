"""Issue 22: the agent process died once at start under Python 3.9 with grpc's "epoll_wait error: Bad file
descriptor" as its only output. Cause (grpc/grpc#43055, grpcio 1.80-1.83, reproduced here under Debian 11's
Python 3.9 with grpcio 1.80.1: about 1 fork in 15 aborts): a process with a busy gRPC channel forks; gRPC's
fork handler restarts its poller in the child, `subprocess` closes the child's descriptors before `exec`, and the
child aborts (SIGABRT) before it becomes its program. The agent forks its Edge TPU probe while its Pub/Sub
channel publishes; the test forked the agent while its own Pub/Sub clients were busy.

The child here is a fresh interpreter run the way `edgefleet-agent` starts (the variable not set), so it shows
what the agent's process does on its own, whatever the test process set.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from edgefleet.device.grpc_fork import FORK_SUPPORT_VARIABLE

FORKS = 200

CHILD = f'''
import subprocess, sys, threading
import edgefleet.device.cli  # what `edgefleet-agent` imports first
from edgefleet.device.telemetry.config import TelemetryConfig
from edgefleet.device.telemetry.sinks import PubSubSink
from google.cloud import pubsub_v1

config = TelemetryConfig(pubsub_project="edgefleet-test", pubsub_topic=sys.argv[1])
pubsub_v1.PublisherClient().create_topic(name=f"projects/edgefleet-test/topics/{{sys.argv[1]}}")
sink = PubSubSink(config)
stop = threading.Event()

def publish():  # keeps the channel busy, as the agent's publisher does
    while not stop.is_set():
        sink._client.publish(sink.topic_path, b"x").result()

threading.Thread(target=publish, daemon=True).start()
aborted = [child.returncode for child in (subprocess.run(["true"], capture_output=True) for _ in range({FORKS}))
           if child.returncode != 0]
stop.set()
print(len(aborted), aborted[:3])
'''


@pytest.mark.slow
def test_the_agent_forks_children_while_its_pubsub_channel_is_busy_and_none_aborts(pubsub_env, unique_name):
    env = {name: value for name, value in os.environ.items() if name != FORK_SUPPORT_VARIABLE}
    child = subprocess.run([sys.executable, "-c", CHILD, f"fork-{unique_name}"], env=env, capture_output=True,
                           text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.split()[0] == "0", f"forked children aborted: {child.stdout} {child.stderr[-1000:]}"


def test_the_agent_cli_turns_grpc_fork_handlers_off_before_grpc_is_imported():
    env = {name: value for name, value in os.environ.items() if name != FORK_SUPPORT_VARIABLE}
    shown = subprocess.run([sys.executable, "-c", "import os, sys, edgefleet.device.cli; "
                            f"print(os.environ.get('{FORK_SUPPORT_VARIABLE}'), 'grpc' in sys.modules)"],
                           env=env, capture_output=True, text=True, timeout=120)
    assert shown.stdout.split() == ["false", "False"], shown.stderr[-1000:]
