"""Issue 20 item 6: the pipeline took the next counter from the pointer it read back, unverified. A bucket
writer sets the channel's counter to 2^63-2: the next signed move got the last possible counter, the one after
reused it, and every device refused the channel for good. Now a pointer is verified before it is the base of
anything; one that does not verify (or is out of the contract's bounds) is refused with a clear error, and
replaced only by an explicit signed move, whose counter comes from the clock."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from edgefleet.cli import app
from edgefleet.device.pull import pull_channel_once
from edgefleet.device.store import ModelStore
from edgefleet.flows.registry import LocalRegistryWriter, RegistryWriter
from edgefleet.flows.trust.pointer_signing import next_counter
from edgefleet.kernel.contracts.layout import channel_key
from edgefleet.kernel.contracts.manifest import MAX_POINTER_COUNTER, ChannelPointer
from edgefleet.kernel.errors import VerificationError
from tests.device.store_fixtures import Keys, VersionFactory, publish_versions
from tests.device.test_pull import overwrite_object

KEY = channel_key("birds", "stable")
FORGED_COUNTER = 2**63 - 2


def forge_counter(registry: RegistryWriter, counter: int) -> None:
    """The attack: the genuine pointer, its counter raised (the signature no longer matches)."""
    document = json.loads(registry._read_bytes(KEY))
    document["counter"] = counter
    overwrite_object(registry, KEY, json.dumps(document).encode())


@pytest.mark.parametrize("counter", [FORGED_COUNTER, 10**13])
def test_a_forged_counter_is_never_the_base_of_the_next_one(
    registry: RegistryWriter, make_version: VersionFactory, keys: Keys, store: ModelStore,
    counter: int,
) -> None:
    publish_versions(registry, make_version, "1.0.0", "1.1.0", "1.2.0")
    registry.promote("birds", "1.0.0", "stable", signing_key=keys.private)
    assert pull_channel_once(registry, store, "birds", "stable").outcome == "activated"
    forge_counter(registry, counter)

    with pytest.raises(VerificationError) as refused:
        registry.promote("birds", "1.1.0", "stable", signing_key=keys.private)
    assert "stable" in refused.value.message and "replace" in refused.value.fix
    recovered = registry.promote("birds", "1.1.0", "stable", signing_key=keys.private, replace_unverified=True)
    assert recovered.counter < 10**13  # from the clock, not from the forgery
    assert pull_channel_once(registry, store, "birds", "stable").outcome == "activated"
    registry.promote("birds", "1.2.0", "stable", signing_key=keys.private)
    assert pull_channel_once(registry, store, "birds", "stable").outcome == "activated"
    assert store.current("birds").version == "1.2.0"  # the channel still moves


def test_the_cli_promote_names_the_forgery_and_the_way_out(
    local_registry: LocalRegistryWriter, make_version: VersionFactory, keys: Keys
) -> None:
    publish_versions(local_registry, make_version, "1.0.0", "1.1.0")
    local_registry.promote("birds", "1.0.0", "stable", signing_key=keys.private)
    forge_counter(local_registry, FORGED_COUNTER)
    args = ["registry", "promote", "birds", "1.1.0", "--channel", "stable", "--registry", str(local_registry.root),
            "--signing-key", str(keys.private_file)]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code != 0 and "--replace-unverified" in refused.output, refused.output
    done = CliRunner().invoke(app, [*args, "--replace-unverified"])
    assert done.exit_code == 0, done.output
    assert local_registry.read_channel("birds", "stable").pointer.counter < 10**13


def test_the_contract_bounds_the_counter_and_signing_never_reuses_the_last_one() -> None:
    base = {"schema": "edgefleet.channel/2", "model": "birds", "channel": "stable", "version": "1.0.0",
            "manifest_sha256": "0" * 64, "expires_at": "2030-01-01T00:00:00Z", "key_id": "0" * 16,
            "signature": "A" * 86 + "=="}
    with pytest.raises(ValueError):
        ChannelPointer.model_validate({**base, "counter": FORGED_COUNTER})
    at_max = ChannelPointer.model_validate({**base, "counter": MAX_POINTER_COUNTER})
    from datetime import UTC, datetime

    with pytest.raises(VerificationError, match="counter"):
        next_counter(at_max, datetime.now(UTC))
