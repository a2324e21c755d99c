"""The local stack's emulators start, answer real clients, and stop."""

from __future__ import annotations

from google.cloud import pubsub_v1, storage


def test_pubsub_emulator_round_trips_a_message(pubsub_env, unique_name):
    project = pubsub_env.project
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topic = publisher.create_topic(name=publisher.topic_path(project, f"t-{unique_name}")).name
    sub = subscriber.create_subscription(
        name=subscriber.subscription_path(project, f"s-{unique_name}"), topic=topic).name
    publisher.publish(topic, b"hello", device_id="dev-1").result(timeout=30)
    response = subscriber.pull(subscription=sub, max_messages=1, timeout=30)
    assert [m.message.data for m in response.received_messages] == [b"hello"]
    assert response.received_messages[0].message.attributes["device_id"] == "dev-1"


def test_pubsub_private_emulator_restarts_empty(pubsub_emulator_private, monkeypatch):
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator_private.host)
    publisher = pubsub_v1.PublisherClient()
    topic = publisher.topic_path(pubsub_emulator_private.project, "before-restart")
    publisher.create_topic(name=topic)
    pubsub_emulator_private.restart()
    names = [t.name for t in publisher.list_topics(project=f"projects/{pubsub_emulator_private.project}")]
    assert topic not in names  # the emulator keeps nothing across restarts


def test_gcs_emulator_stores_and_checks_objects(gcs_env, unique_name):
    from google.auth.credentials import AnonymousCredentials

    client = storage.Client(project="edgefleet-local", credentials=AnonymousCredentials())
    bucket = client.create_bucket(f"b-{unique_name}")
    blob = bucket.blob("models/x/1.0.0/labels.txt")
    blob.upload_from_string(b"cat\ndog\n")
    assert bucket.blob("models/x/1.0.0/labels.txt").download_as_bytes() == b"cat\ndog\n"
