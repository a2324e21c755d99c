"""Fixtures of the fleet monitor tests: a fresh fleet state on each engine (an SQLite file; a database on a real
PostgreSQL server started for the session), an emulator topic with a fleet-monitor subscription
(dead-lettering after 5 attempts), and the monitor's config for it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgefleet.local.postgres import PostgresServer, postgres_server, unavailable_reason
from edgefleet.monitor.config import MonitorConfig
from edgefleet.monitor.store import FleetStore, open_store

# The helpers module sits beside this file (tests/ has no packages); conftests load before test modules
# put their directory on sys.path.
sys.path.insert(0, str(Path(__file__).parent))
from monitor_helpers import MAX_DELIVERY_ATTEMPTS, FleetKeys, TelemetryTopic  # noqa: E402

ENGINES = ("sqlite", "postgresql")

UNKNOWN_DEVICE_LOOKUP_S = 1e-9
"""A device without a key is looked up at each of its messages (the production default rate-limits it)."""


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test session (skipped, with the reason, where none can start)."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with postgres_server() as server:
        yield server


@pytest.fixture(params=ENGINES)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a fresh fleet state lives, once per engine: an sqlite:/// file or a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fleet.sqlite'}"
    return request.getfixturevalue("postgres").new_database()


@pytest.fixture
def store(store_url: str) -> Iterator[FleetStore]:
    """A fresh fleet state (on each engine) with a 4-sample latency window and 60 s count buckets."""
    with open_store(store_url, latency_window=4, count_bucket_s=60.0) as opened:
        yield opened


@pytest.fixture
def telemetry_topic(pubsub_env, unique_name: str, tmp_path: Path) -> Iterator[TelemetryTopic]:
    """Topic + monitor subscription (dead-letter policy, 5 attempts) + dead-letter topic and subscription;
    `publish` signs each message with its device's own key, registered in `keys.registry`."""
    from google.cloud import pubsub_v1

    project = pubsub_env.project
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topic = publisher.create_topic(name=publisher.topic_path(project, f"telemetry-{unique_name}")).name
    dead_topic = publisher.create_topic(name=publisher.topic_path(project, f"telemetry-dl-{unique_name}")).name
    dead_sub = subscriber.create_subscription(
        name=subscriber.subscription_path(project, f"telemetry-dl-sub-{unique_name}"), topic=dead_topic).name
    subscription_id = f"fleet-monitor-{unique_name}"
    subscription = subscriber.create_subscription(request={
        "name": subscriber.subscription_path(project, subscription_id), "topic": topic,
        "dead_letter_policy": {"dead_letter_topic": dead_topic, "max_delivery_attempts": MAX_DELIVERY_ATTEMPTS},
    }).name
    yield TelemetryTopic(project, topic, subscription_id, subscription, dead_sub, publisher, subscriber,
                         FleetKeys(tmp_path / "fleet-keys"))
    for name in (subscription, dead_sub):
        subscriber.delete_subscription(subscription=name)
    for name in (topic, dead_topic):
        publisher.delete_topic(topic=name)
    subscriber.close()


@pytest.fixture
def monitor_config(telemetry_topic: TelemetryTopic, tmp_path: Path) -> MonitorConfig:
    """Strict (the default): the device keys `telemetry_topic.publish` signs with, re-read often, since the
    tests' devices appear while the monitor runs; a device without a key is looked up at its every message
    (its key is registered before its first message is published: never refused for a read made just before)."""
    return MonitorConfig(project=telemetry_topic.project, subscription=telemetry_topic.subscription_id,
                         store_path=tmp_path / "fleet.sqlite", latency_window=8,
                         ingest={"batch_max_wait_s": 0.05},
                         identity={"registry": str(telemetry_topic.keys.registry), "refresh_s": 0.05,
                                   "unknown_refresh_s": UNKNOWN_DEVICE_LOOKUP_S,
                                   "enrolment_keys": [str(telemetry_topic.keys.enrolment_public)]})
