"""What a simulated fleet runs against: a registry directory with signed versions and a signed channel, a
release key and a development enrolment key, a Pub/Sub topic and subscription on the emulator, and the
fleet monitor's YAML (signatures required, keys from the registry). Used by `bench.fleet_sim_bench` and the
simulator's test; the devices themselves are `runner.SimFleet`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from edgefleet.flows.registry import open_registry_writer
from edgefleet.flows.release.bundle import create_version_dir
from edgefleet.flows.trust.device_key_records import development_enrolment_key
from edgefleet.kernel.trust.signatures import generate_keypair, load_private_key, save_private_key, save_public_key

MODEL_FILE = "mobilenet_v1_0.25_128_quant.tflite"
"""The smallest of Coral's test models: each version is it with the version appended (a distinct sha256); a
simulated device never loads it, the release pipeline reads its input and output specs."""

LABELS = 10
"""Classes of a simulated model (`bench.fleet_model.CLASSES`: the devices' class mixes have this many)."""


@dataclass(frozen=True)
class SimWorld:
    base: Path
    registry: Path
    release_key: Path
    release_public: Path
    enrolment_key: Path
    monitor_config: Path
    model_file: Path
    project: str
    topic: str
    subscription: str
    model: str = "imagenet"
    channel: str = "stable"

    def publish(self, version: str, *, promote: bool = False) -> None:
        """Publishes a signed version (and points the channel at it when `promote`)."""
        key = load_private_key(self.release_key)
        dest = self.base / "builds" / version
        payload = self.model_file.read_bytes() + b"\0" * 16 + f"edgefleet-sim:{version}".encode()
        labels = "".join(f"class-{index}\n" for index in range(LABELS)).encode()
        create_version_dir(dest, {"model_cpu.tflite": payload, "labels.txt": labels}, private_key=key,
                           model=self.model, version=version)
        writer = open_registry_writer(self.registry)
        writer.publish_version(self.model, version, dest)
        if promote:
            writer.promote(self.model, version, self.channel, signing_key=key)


def make_world(base: Path, coral_data: Path, *, project: str, topic: str, subscription: str,
               store_url: str | None = None, monitor: dict[str, object] | None = None) -> SimWorld:
    """Creates the registry, the keys, the topic and subscription (on the emulator PUBSUB_EMULATOR_HOST names)
    and the monitor's YAML under `base`; `coral_data`: Coral's test data (its `MODEL_FILE`)."""
    from google.cloud import pubsub_v1

    from edgefleet.monitor import MonitorConfig

    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic_path = publisher.create_topic(name=publisher.topic_path(project, topic)).name
    subscriber.create_subscription(name=subscriber.subscription_path(project, subscription), topic=topic_path)
    subscriber.close()
    registry = base / "registry"
    registry.mkdir(parents=True)
    private, public = generate_keypair()
    release_key, release_public = save_private_key(private, base / "release.key"), save_public_key(
        public, base / "release.pub")
    enrolment_key = base / "fleet-enrolment.key"
    enrolment_public = development_enrolment_key(enrolment_key, registry_uri=str(registry))
    document: dict[str, object] = {
        "project": project, "subscription": subscription, "store_path": str(base / "fleet.sqlite"),
        "identity": {"registry": str(registry), "enrolment_keys": [str(enrolment_public)]}} | (monitor or {})
    if store_url:
        document["store"] = {"url": store_url}
    config = MonitorConfig.model_validate(document)
    monitor_config = base / "monitor.yaml"
    monitor_config.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    return SimWorld(base, registry, release_key, release_public, enrolment_key, monitor_config,
                    coral_data / MODEL_FILE, project, topic,
                    subscription)
