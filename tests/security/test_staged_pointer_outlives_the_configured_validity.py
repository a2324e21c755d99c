"""A pull rollout's staged pointers were signed for the default 14 days whatever `signing.pointer_validity_days` the
rollout's form set (promotions and re-signing honoured it). The validity bounds how long a withheld pointer can be
replayed to a device (a freeze: it keeps the fleet on what that pointer says): an operator who set 2 days for that
got 14 on every staged wave and every send-back."""

from __future__ import annotations

from datetime import timedelta

import pytest

from edgefleet.flows.registry import LocalRegistryWriter
from edgefleet.flows.registry.staged import stage_rollout
from edgefleet.flows.rollout.pull_tasks import stage_share_task
from edgefleet.flows.trust.signing_params import SigningParams
from tests.device.store_fixtures import Keys, VersionFactory, publish_versions

ROLLOUT = "birds-1.1.0"


@pytest.fixture
def stable_on_1_0_0(local_registry: LocalRegistryWriter, make_version: VersionFactory, keys: Keys) -> None:
    publish_versions(local_registry, make_version, "1.0.0", "1.1.0")
    local_registry.promote("birds", "1.0.0", "stable", signing_key=keys.private)


def _lifetime(pointer) -> timedelta:  # noqa: ANN001 - a signed ChannelPointer
    assert pointer.expires_at is not None and pointer.updated_at is not None
    return pointer.expires_at - pointer.updated_at


@pytest.mark.usefixtures("stable_on_1_0_0")
@pytest.mark.parametrize("share_bp", [1_000, 0], ids=["a wave", "the send-back"])
def test_a_pull_rollouts_staged_pointer_lives_as_long_as_its_signing_settings_say(
        local_registry: LocalRegistryWriter, keys: Keys, share_bp: int) -> None:
    signing = SigningParams(key_file=str(keys.private_file), pointer_validity_days=2)
    if share_bp == 0:  # a send-back follows a wave
        stage_share_task.fn(local_registry, signing, model="birds", channel="stable", rollout_id=ROLLOUT,
                            version="1.1.0", share_bp=1_000)
    pointer = stage_share_task.fn(local_registry, signing, model="birds", channel="stable", rollout_id=ROLLOUT,
                                  version="1.1.0", share_bp=share_bp)
    assert _lifetime(pointer) == timedelta(days=2)


def test_staging_takes_no_default_validity() -> None:
    """The registry's staging names no validity of its own: every caller passes its form's (a default would be
    the 14 days this test file is about, for the next caller that forgets)."""
    import inspect

    assert inspect.signature(stage_rollout).parameters["validity"].default is inspect.Parameter.empty
