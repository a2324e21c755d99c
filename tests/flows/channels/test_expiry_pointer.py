"""A forgotten resign-channels is noticed before the pointers expire (issue 22, item 10).

The resign schedule ships off (prefect.yaml); left off, every signed pointer expires after its validity and
pull-mode devices stop moving. `edgefleet registry ls` warns first, N days ahead (N a setting).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from edgefleet.cli import app
from edgefleet.flows.channels.expiry import expiring_pointers, registry_expiry_warnings
from edgefleet.flows.registry import LocalRegistryWriter
from edgefleet.flows.rollout.promote import promote_signed
from edgefleet.flows.trust.signing_params import SigningParams
from tests.device.store_fixtures import Keys, VersionFactory

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def _publish(registry: LocalRegistryWriter, make_version: VersionFactory, keys: Keys,
             validity: dict[str, float]) -> None:
    registry.publish_version("birds", "1.0.0", make_version("birds", "1.0.0"))
    for channel, days in validity.items():
        promote_signed(registry, "birds", "1.0.0", channel,
                       SigningParams(key_file=str(keys.private_file), pointer_validity_days=days), by="test")


def test_pointers_expiring_within_the_window_are_named_soonest_first(
    local_registry: LocalRegistryWriter, make_version: VersionFactory, keys: Keys,
) -> None:
    _publish(local_registry, make_version, keys, {"stable": 2.0, "canary": 1.0, "beta": 10.0})
    now = datetime.now(UTC)
    warnings = registry_expiry_warnings(local_registry, now, timedelta(days=3))
    assert [(w.channel, w.model, w.version) for w in warnings] == [("canary", "birds", "1.0.0"),
                                                                   ("stable", "birds", "1.0.0")]
    assert 0.9 < warnings[0].days_left <= 1.0 and not warnings[0].expired
    assert registry_expiry_warnings(local_registry, now, timedelta(days=0.5)) == []
    later = registry_expiry_warnings(local_registry, now + timedelta(days=1.5), timedelta(days=0))
    assert [w.channel for w in later] == ["canary"] and later[0].expired
    assert "expired" in later[0].message() and "pull-mode devices" in later[0].message()


def test_unsigned_pointers_have_no_expiry_to_warn_about(
    local_registry: LocalRegistryWriter, make_version: VersionFactory,
) -> None:
    local_registry.publish_version("birds", "1.0.0", make_version("birds", "1.0.0"))
    pointer = local_registry.promote("birds", "1.0.0", "stable", by="test")  # schema 1, no expiry
    assert pointer.expires_at is None
    assert expiring_pointers([("birds", "stable", pointer)], NOW, timedelta(days=365)) == []


@pytest.mark.parametrize(("window", "warned"), [("3", True), ("1", False)])
def test_registry_ls_warns_within_the_configured_days_and_says_how_to_renew(
    local_registry: LocalRegistryWriter, make_version: VersionFactory, keys: Keys, window: str, warned: bool,
) -> None:
    _publish(local_registry, make_version, keys, {"stable": 2.0})
    result = CliRunner().invoke(app, ["registry", "ls", "--registry", str(local_registry.root)],
                                env={"EDGEFLEET_POINTER_WARN_DAYS": window})
    assert result.exit_code == 0, result.output
    assert ("warning: channel stable of birds (-> 1.0.0) expires in" in result.output) is warned
    assert ("resign-channels" in result.output) is warned
