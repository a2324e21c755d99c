"""Issue 20 item 6: one pointer with a timezone-less expiry stopped the whole resign run (a TypeError comparing
it with the clock escaped the per-channel handling), so no other channel was renewed and all of them expired.
Now the contract wants an expiry with a timezone, and one bad channel is reported while the others go on."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from edgefleet.flows.registry import LocalRegistryWriter
from edgefleet.flows.trust.resign_channels import resign_channels
from edgefleet.kernel.contracts.layout import channel_key
from edgefleet.kernel.contracts.manifest import ChannelPointer
from tests.device.store_fixtures import Keys, VersionFactory
from tests.device.test_pull import overwrite_object


def test_one_naive_expiry_does_not_stop_the_others(
    local_registry: LocalRegistryWriter, make_version: VersionFactory, keys: Keys
) -> None:
    local_registry.publish_version("birds", "1.0.0", make_version("birds", "1.0.0"))
    for channel in ("beta", "stable"):
        local_registry.promote("birds", "1.0.0", channel, signing_key=keys.private, validity=timedelta(days=1))
    document = json.loads(local_registry._read_bytes(channel_key("birds", "beta")))
    document["expires_at"] = document["expires_at"].replace("Z", "").split("+")[0]  # no timezone
    overwrite_object(local_registry, channel_key("birds", "beta"), json.dumps(document).encode())

    results = {r.channel: r for r in resign_channels(local_registry, keys.private, validity=timedelta(days=14),
                                                     renew_within=timedelta(days=7))}
    assert results["beta"].outcome == "failed" and "timezone" in results["beta"].detail
    assert results["stable"].outcome == "resigned"


def test_the_contract_refuses_an_expiry_without_a_timezone() -> None:
    with pytest.raises(ValueError, match="timezone"):
        ChannelPointer.model_validate({
            "schema": "edgefleet.channel/2", "model": "birds", "channel": "stable", "version": "1.0.0",
            "manifest_sha256": "0" * 64, "counter": 5, "expires_at": "2030-01-01T00:00:00", "key_id": "0" * 16,
            "signature": "A" * 86 + "=="})
