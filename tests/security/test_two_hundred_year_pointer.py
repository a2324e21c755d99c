"""Issue 20 item 9: a signed pointer valid for 200 years. The expiry is what makes a frozen registry
noticed (the device reports an expired pointer); a pointer signed to outlive every re-signing schedule
(a misconfigured pipeline, or whoever held the key once) defeats it for good, and the agent accepted it.
The agent now refuses a pointer valid for longer than `MAX_POINTER_VALIDITY` from now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from edgefleet.device.pull import pull_channel_once
from edgefleet.device.store import ModelStore
from edgefleet.device.trust.pointers import MAX_POINTER_VALIDITY, ChannelRecord, judge_pointer
from edgefleet.flows.registry import LocalRegistryWriter
from edgefleet.flows.trust.pointer_signing import sign_pointer
from tests.device.store_fixtures import Keys, VersionFactory, publish_versions

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def test_a_two_hundred_year_pointer_is_refused(
    local_registry: LocalRegistryWriter, store: ModelStore, make_version: VersionFactory, keys: Keys
) -> None:
    publish_versions(local_registry, make_version, "1.0.0")
    local_registry.promote("birds", "1.0.0", "stable", signing_key=keys.private, validity=timedelta(days=14))
    assert pull_channel_once(local_registry, store, "birds", "stable").outcome == "activated"
    publish_versions(local_registry, make_version, "1.1.0")
    local_registry.promote("birds", "1.1.0", "stable", signing_key=keys.private,
                           validity=timedelta(days=200 * 365))

    result = pull_channel_once(local_registry, store, "birds", "stable")

    assert (result.changed, result.outcome) == (False, "pointer_refused")
    assert f"{MAX_POINTER_VALIDITY.days} days" in result.reason and "re-sign" in result.reason
    assert store.current("birds").version == "1.0.0"


def test_the_cap_is_inclusive_and_measured_from_the_device_clock(keys: Keys) -> None:
    def pointer(validity: timedelta):
        return sign_pointer(keys.private, model="birds", channel="stable", version="1.0.0",
                            manifest_sha256="ab" * 32, previous=None, validity=validity, now=NOW)

    at_cap = judge_pointer(pointer(MAX_POINTER_VALIDITY), ChannelRecord(), floor=None, now=NOW)
    over = judge_pointer(pointer(MAX_POINTER_VALIDITY + timedelta(seconds=1)), ChannelRecord(), floor=None,
                         now=NOW)
    # a pointer signed long ago for a long time is judged by what is left of it, not by when it was signed
    later = judge_pointer(pointer(MAX_POINTER_VALIDITY + timedelta(days=10)), ChannelRecord(), floor=None,
                          now=NOW + timedelta(days=10))

    assert (at_cap.verdict, over.verdict, later.verdict) == ("accept", "refuse", "accept")


def test_an_expiry_without_a_time_zone_is_refused_not_a_crash(keys: Keys) -> None:
    pointer = sign_pointer(keys.private, model="birds", channel="stable", version="1.0.0",
                           manifest_sha256="ab" * 32, previous=None, now=NOW)
    naive = pointer.model_copy(update={"expires_at": pointer.expires_at.replace(tzinfo=None)})
    judgement = judge_pointer(naive, ChannelRecord(), floor=None, now=NOW)
    assert judgement.verdict == "refuse" and "time zone" in judgement.reason


def test_the_pipelines_refuse_to_sign_a_pointer_the_agents_would_refuse() -> None:
    """The path beside: the release/resign parameters and the CLI cannot ask for a validity above the cap."""
    import pytest
    from pydantic import ValidationError
    from typer.testing import CliRunner

    from edgefleet.cli.app import app
    from edgefleet.flows.trust.signing_params import SigningParams

    assert SigningParams(pointer_validity_days=MAX_POINTER_VALIDITY.days).pointer_validity_days == 90
    with pytest.raises(ValidationError, match="less than or equal to 90"):
        SigningParams(pointer_validity_days=MAX_POINTER_VALIDITY.days + 1)
    result = CliRunner().invoke(app, ["registry", "promote", "birds", "1.0.0", "--channel", "stable",
                                      "--registry", "/nonexistent", "--valid-days", "200"])
    assert result.exit_code != 0 and "--valid-days" in result.output
