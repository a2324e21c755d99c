"""The key registry of a fleet, as the attack tests on device key records use it (issue 20, item 7).

A real registry directory, records written by the real enrolment (`register_device_key`, signed with a real
enrolment key), and the monitor's real gate: `TelemetryVerifier.from_config` reading the registry, and the
real batch path applying (or refusing) messages into a real SQLite fleet state. A "bucket writer" is anyone who
can write files into the registry: the tests plant files there directly.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgefleet.device.registry.local import LocalRegistryReader, content_generation
from edgefleet.device.trust.device_identity import public_key_text, sign_telemetry
from edgefleet.flows.registry import LocalRegistryWriter, RegistryWriter
from edgefleet.flows.trust.device_key_records import register_device_key
from edgefleet.kernel.contracts.devicekey import DEVICE_KEY_SCHEMA_V1
from edgefleet.kernel.trust.signatures import generate_keypair, key_id, save_public_key
from edgefleet.monitor.batch import process_batch
from edgefleet.monitor.ingest import Outcome, Status
from edgefleet.monitor.store import FleetStore, open_store
from edgefleet.monitor.telemetry_verifier import FORGED_PREFIX, IdentityConfig, TelemetryVerifier
from tests.security.test_forged_telemetry import build
from tests.security.test_one_message_stops_the_monitor import FakeMessage


class Fleet:
    """A fleet's key registry (a real directory), its enrolment key, and the monitor's identity config."""

    def __init__(self, root: Path, registry: RegistryWriter | None = None,
                 write_object: Callable[[str, bytes], None] | None = None) -> None:
        """`registry` (default: a local directory) and how a bucket writer writes an object there (default: a
        file under the local registry's root)."""
        self.root = root
        self.registry = registry or LocalRegistryWriter(root / "registry", create=True)
        self._write_object = write_object or self._write_file
        self.enrolment, public = generate_keypair()
        self.enrolment_public = save_public_key(public, root / "enrolment.pub")
        local = Path(getattr(self.registry, "root", root / "not-local"))
        self.devices_dir = local / "fleet" / "devices"  # where a local registry keeps them
        self.revoked_dir = local / "fleet" / "revoked"
        self._seq = 0

    def enrol(self, device_id: str, key: Ed25519PrivateKey | None = None, **kw: Any) -> Ed25519PrivateKey:
        """What deploy-agent does: the device's key, published in a record signed by the enrolment key."""
        key = key or generate_keypair()[0]
        register_device_key(self.registry, device_id, key.public_key(), enrolment_key=self.enrolment, **kw)
        return key

    def plant(self, name: str, document: Any) -> None:
        """A bucket writer writes an object under fleet/devices/ (JSON of `document`, or the text given)."""
        text = document if isinstance(document, str) else json.dumps(document)
        self._write_object(f"fleet/devices/{name}", text.encode())

    def _write_file(self, key: str, data: bytes) -> None:
        path = self.registry.root / key  # type: ignore[attr-defined] - the local registry's
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def config(self, **changes: Any) -> IdentityConfig:
        settings = {"registry": self.registry.uri, "enrolment_keys": (str(self.enrolment_public),),
                    "require_signed": True}
        return IdentityConfig(**(settings | changes))

    def monitor(self, **changes: Any) -> TelemetryVerifier:
        verifier = TelemetryVerifier.from_config(self.config(**changes))
        assert verifier is not None
        return verifier

    def send(self, store: FleetStore, verifier: TelemetryVerifier, device_id: str,
             key: Ed25519PrivateKey | None) -> Outcome:
        """One telemetry message claiming `device_id`, signed by `key` (None: unsigned), through the monitor."""
        self._seq += 1
        data = build(device_id)(self._seq).to_json_bytes()
        attributes = {"device_id": device_id, "model_version": "1.0.0"}
        if key is not None:
            attributes |= sign_telemetry(key, data, device_id, 1)
        message = FakeMessage(data, f"{device_id}-{self._seq}", attributes)
        return process_batch(store, [message], float(self._seq), verifier)[0]


def applied(outcome: Outcome) -> bool:
    return outcome.status is Status.APPLIED


def refused(outcome: Outcome) -> bool:
    """Refused as unauthenticated (not merely malformed)."""
    return outcome.status is Status.MALFORMED and (outcome.reason or "").startswith(FORGED_PREFIX)


def unsigned_record(device_id: str, key: Ed25519PrivateKey) -> dict[str, str]:
    """A well-formed schema 1 record (what every record was before schema 2): anyone can write one."""
    public = key.public_key()
    return {"schema": DEVICE_KEY_SCHEMA_V1, "device_id": device_id, "public_key": public_key_text(public),
            "key_id": key_id(public), "added_by": "deploy-agent"}


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    return Fleet(tmp_path)


@pytest.fixture
def fleet_state(tmp_path: Path) -> Iterator[FleetStore]:
    with open_store(tmp_path / "fleet.sqlite", latency_window=4, count_bucket_s=60.0) as opened:
        yield opened


class GenerationListingReader(LocalRegistryReader):
    """The local registry read as GCS reads it: a listing carries each object's generation (here the content
    token: a new one with every change), with no request per record; it counts the records read."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads: list[str] = []

    def _list_tagged(self, prefix: str) -> dict[str, str | None]:
        return {key: f"{content_generation((self.root / key).read_bytes())}" for key in self._list_keys(prefix)}

    def _read_bounded(self, key: str, max_bytes: int) -> bytes | None:
        self.reads.append(key)
        return super()._read_bounded(key, max_bytes)
