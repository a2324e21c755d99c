"""The monitor's identity defaults (issue 20) and the upgrade path from a fleet that ran the old defaults.

Strict is the default: a monitor config without `identity.registry` is refused naming the fix, unless it says
`identity.mode: transition` explicitly. A fleet on the old defaults (agents from before device keys send
unsigned telemetry; newer agents sign with keys nobody registered) moves to strict without a device's
telemetry being refused at any step: transition mode with the registry, keys registered, agents upgraded,
then strict. Real keys in a real registry directory, the monitor's real config loading and batch path."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from monitor_helpers import telemetry
from pydantic import ValidationError

from edgefleet.device.trust.device_identity import sign_telemetry
from edgefleet.flows.registry import LocalRegistryWriter
from edgefleet.flows.trust.device_key_records import register_device_key
from edgefleet.kernel.errors import ConfigError
from edgefleet.kernel.trust.signatures import generate_keypair, save_public_key
from edgefleet.monitor.batch import process_batch
from edgefleet.monitor.config import load_monitor_config
from edgefleet.monitor.ingest import Status
from edgefleet.monitor.store import FleetStore, open_store
from edgefleet.monitor.telemetry_verifier import FORGED_PREFIX, IdentityConfig, TelemetryVerifier
from tests.security.test_one_message_stops_the_monitor import FakeMessage


def write_config(tmp_path: Path, identity: dict | None) -> Path:
    path = tmp_path / "monitor.yaml"
    section = {"store_path": str(tmp_path / "fleet.sqlite")} | ({"identity": identity} if identity else {})
    path.write_text(yaml.safe_dump({"monitor": section}))
    return path


def test_a_config_without_a_key_registry_is_refused_naming_the_fix(tmp_path: Path) -> None:
    config = load_monitor_config(write_config(tmp_path, None))  # readers (fleet status) still read it
    assert (config.identity.mode, config.identity.require_signed) == ("strict", True)
    with pytest.raises(ConfigError, match="no identity.registry") as error:
        TelemetryVerifier.from_config(config.identity)
    assert "identity.registry" in error.value.fix and "identity.mode: transition" in error.value.fix


def test_transition_is_explicit_and_the_older_spelling_still_reads(tmp_path: Path) -> None:
    transition = load_monitor_config(write_config(tmp_path, {"mode": "transition"})).identity
    assert TelemetryVerifier.from_config(transition) is None  # no registry: nothing checked, as before
    old_spelling = load_monitor_config(write_config(tmp_path, {"require_signed": False})).identity
    assert (old_spelling.mode, old_spelling.require_signed) == ("transition", False)
    strict = load_monitor_config(write_config(tmp_path, {"require_signed": True, "registry": "reg"})).identity
    assert strict.mode == "strict"
    with pytest.raises(ValidationError, match="contradicts identity.mode"):
        IdentityConfig(mode="transition", require_signed=True)



@pytest.mark.parametrize("spelling", ["no", "false", 0, "off"])
def test_a_strict_mode_cannot_be_quietly_undone_by_another_spelling_of_false(spelling: object) -> None:
    """YAML and env strings that pydantic reads as False contradict `mode: strict` just as `false` does (before,
    only a real bool was compared, and `require_signed: "no"` ran a strict-looking monitor in transition)."""
    with pytest.raises(ValidationError, match="contradicts identity.mode"):
        IdentityConfig(mode="strict", require_signed=spelling)
    assert IdentityConfig(require_signed=spelling).mode == "transition"


def test_unsigned_key_records_are_accepted_only_in_transition() -> None:
    """A strict monitor that trusted unsigned key records would let any registry writer add a device."""
    with pytest.raises(ValidationError, match="accept_unsigned_key_records is a transition setting"):
        IdentityConfig(registry="reg", accept_unsigned_key_records=True)
    assert IdentityConfig(registry="reg", mode="transition", accept_unsigned_key_records=True).mode == "transition"


class Agent:
    """One device's telemetry as its agent sends it: unsigned (an agent from before device keys) or signed
    with its own key; seq goes on across every step."""

    def __init__(self, device_id: str, key: Ed25519PrivateKey | None) -> None:
        self.device_id, self.key, self.seq = device_id, key, 0

    def send(self) -> FakeMessage:
        self.seq += 1
        data = telemetry(self.device_id, self.seq).to_json_bytes()
        signature = sign_telemetry(self.key, data, self.device_id, 1) if self.key else {}
        return FakeMessage(data, f"{self.device_id}-{self.seq}", {"device_id": self.device_id, **signature})


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FleetStore]:
    with open_store(tmp_path / "fleet.sqlite", latency_window=4, count_bucket_s=60.0) as opened:
        yield opened


def test_an_old_default_fleet_moves_to_strict_without_a_device_being_refused(
    tmp_path: Path, store: FleetStore
) -> None:
    registry = LocalRegistryWriter(tmp_path / "registry", create=True)
    enrolment, enrolment_public = generate_keypair()  # the fleet enrolment key signs the device key records
    keys = {"registry": str(registry.root),
            "enrolment_keys": [str(save_public_key(enrolment_public, tmp_path / "enrolment.pub"))]}
    old, new = Agent("old-agent", None), Agent("new-agent", generate_keypair()[0])  # keys not registered
    fleet = [old, new]
    received = [0.0]

    def step(identity: dict) -> Callable[[list[FakeMessage]], list]:
        verifier = TelemetryVerifier.from_config(IdentityConfig(**identity, refresh_s=1e-9))

        def run(extra: list[FakeMessage]) -> list:
            received[0] += 1.0
            messages = [agent.send() for agent in fleet for _ in range(2)]
            outcomes = process_batch(store, messages + extra, received[0], verifier)
            assert [o.status for o in outcomes[:len(messages)]] == [Status.APPLIED] * len(messages), \
                [(o.device_id, o.reason) for o in outcomes]
            return outcomes[len(messages):]
        return run

    # 1. transition mode with the registry: everyone goes on
    step({"mode": "transition", **keys})([])
    # 2. the signing agents' keys registered (deploy-agent with its `registry` parameter): still everyone
    register_device_key(registry, "new-agent", new.key.public_key(), enrolment_key=enrolment, by="test")
    transition = step({"mode": "transition", **keys})
    transition([])
    # 3. the old agent upgraded (its own key, registered): its seq goes on
    old.key = generate_keypair()[0]
    register_device_key(registry, "old-agent", old.key.public_key(), enrolment_key=enrolment, by="test")
    forged = telemetry("new-agent", 99).to_json_bytes()
    [refused] = transition([FakeMessage(forged, "forged-1", {})])
    assert refused.status is Status.MALFORMED and refused.reason.startswith(FORGED_PREFIX)
    # 4. strict: everyone goes on; unsigned and unknown devices are refused
    strict = step(keys)
    stranger = telemetry("stranger", 1).to_json_bytes()
    refused = strict([FakeMessage(forged, "forged-2", {}), FakeMessage(stranger, "stranger-1", {})])
    assert [o.status for o in refused] == [Status.MALFORMED] * 2
    rows = store.connection.execute("SELECT device_id, lost, duplicates FROM devices ORDER BY device_id").fetchall()
    assert rows == [("new-agent", 0, 0), ("old-agent", 0, 0)]
    assert (old.seq, new.seq) == (8, 8)
