"""Issue 20 item 6, the path beside it: the release flow reads the channel it moves at the end. A bucket writer
who sets that channel's counter to 2^63-2 made the release's signed move take the last counter (freezing the
channel for every device); a pointer that is not even valid failed the release at its plan, before anything
was published. Now the version is still published, and the move refuses the pointer, naming the way out."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgefleet.flows.registry import open_registry_writer
from edgefleet.flows.release.version_tasks import move_channel, plan_release
from edgefleet.kernel.contracts.layout import channel_key
from edgefleet.kernel.errors import VerificationError
from edgefleet.kernel.trust.signatures import load_private_key
from tests.device.store_fixtures import VersionFactory
from tests.device.test_pull import overwrite_object


def test_the_release_move_refuses_a_forged_counter_and_the_plan_survives_it(
    make_params: Callable[..., Any], make_version: VersionFactory, signing_keys: tuple[Path, Path]
) -> None:
    params = make_params(model="birds", channel="canary")
    release_key = load_private_key(signing_keys[0])
    registry = open_registry_writer(params.registry)
    for version in ("1.0.0", "1.0.1"):
        registry.publish_version("birds", version, make_version("birds", version, private_key=release_key))
    registry.promote("birds", "1.0.0", "canary", signing_key=release_key)
    key = channel_key("birds", "canary")
    document = json.loads(registry._read_bytes(key))
    document["counter"] = 2**63 - 2
    overwrite_object(registry, key, json.dumps(document).encode())

    plan = plan_release.fn(params)  # reading the channel does not stop the release
    assert plan.version == "1.0.2" and plan.channel_version_before is None
    with pytest.raises(VerificationError) as refused:
        move_channel.fn(params.registry, "birds", "1.0.1", "canary", plan.channel_version_before, "release",
                        params.signing)
    assert "--replace-unverified" in refused.value.fix
    assert json.loads(registry._read_bytes(key))["counter"] == 2**63 - 2  # left for a person to look at
