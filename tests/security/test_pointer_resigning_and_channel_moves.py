"""Finding 1, the writing side: every channel move signs (CLI `registry promote`, the release flow's move,
`promote-canary`, rollout completion through `promote_signed`), and the scheduled `resign-channels` flow
renews pointers before they expire without ever laundering a tampered one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from edgefleet.cli import app
from edgefleet.device.trust.pointers import verify_pointer
from edgefleet.flows.registry import LocalRegistryWriter
from edgefleet.flows.rollout.promote import promote_signed
from edgefleet.flows.trust.release_key import channel_signing_key
from edgefleet.flows.trust.resign_channels import ResignParams, needs_resign, resign_channels
from edgefleet.flows.trust.signing_params import SigningParams
from edgefleet.kernel.contracts.layout import channel_key
from edgefleet.kernel.errors import ConfigError
from tests.device.store_fixtures import Keys, VersionFactory, publish_versions
from tests.device.test_pull import overwrite_object

REPO = Path(__file__).resolve().parents[2]


def test_cli_promote_signs_with_the_named_key_and_refuses_without_one(
    local_registry: LocalRegistryWriter, make_version: VersionFactory, keys: Keys, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no development key there
    local_registry.publish_version("birds", "1.0.0", make_version("birds", "1.0.0"))
    args = ["registry", "promote", "birds", "1.0.0", "--channel", "stable", "--registry", str(local_registry.root)]
    runner = CliRunner()
    missing = runner.invoke(app, args)
    assert missing.exit_code == 2 and "--signing-key" in missing.output
    assert local_registry.read_channel("birds", "stable").pointer is None

    done = runner.invoke(app, [*args, "--signing-key", str(keys.private_file)])
    assert done.exit_code == 0, done.output
    pointer = local_registry.read_channel("birds", "stable").pointer
    assert pointer.signed
    verify_pointer(keys.public, pointer, source="test")


def test_development_key_never_signs_for_a_cloud_registry_unless_allowed(tmp_path: Path) -> None:
    params = SigningParams(dev_key_file=str(tmp_path / "dev.key"))
    with pytest.raises(ConfigError, match="cloud registry"):
        channel_signing_key(params, "gs://fleet-models/prod")


def test_rollout_completion_marks_a_lower_version_as_a_deliberate_downgrade(
    local_registry: LocalRegistryWriter, make_version: VersionFactory, keys: Keys
) -> None:
    signing = SigningParams(key_file=str(keys.private_file))
    publish_versions(local_registry, make_version, "1.0.0", "2.0.0")
    up = promote_signed(local_registry, "birds", "2.0.0", "stable", signing, by="rollout a", downgrade=True)
    assert up.signed and not up.downgrade  # a normal move is never marked
    down = promote_signed(local_registry, "birds", "1.0.0", "stable", signing, by="rollout b", downgrade=True)
    assert down.downgrade and down.counter > up.counter


def test_resign_renews_only_what_is_due_and_reports_a_tampered_pointer(
    local_registry: LocalRegistryWriter, make_version: VersionFactory, keys: Keys
) -> None:
    local_registry.publish_version("birds", "1.0.0", make_version("birds", "1.0.0"))
    for channel in ("canary", "stable"):
        local_registry.promote("birds", "1.0.0", channel, signing_key=keys.private, validity=timedelta(days=14))
    now = datetime.now(UTC)
    fresh = resign_channels(local_registry, keys.private, validity=timedelta(days=14),
                            renew_within=timedelta(days=7), now=now)
    assert {r.outcome for r in fresh} == {"fresh"}
    due = resign_channels(local_registry, keys.private, validity=timedelta(days=14),
                          renew_within=timedelta(days=7), now=now + timedelta(days=8))
    assert {r.outcome for r in due} == {"resigned"}

    stable = local_registry.read_channel("birds", "stable").pointer
    forged = stable.model_copy(update={"version": "1.0.0", "downgrade": True})  # signature no longer matches
    overwrite_object(local_registry, channel_key("birds", "stable"), forged.to_json_bytes())
    results = {r.channel: r for r in resign_channels(local_registry, keys.private, validity=timedelta(days=14))}
    assert results["stable"].outcome == "failed" and "signature" in results["stable"].detail
    assert results["canary"].outcome == "resigned"
    assert local_registry.read_channel("birds", "stable").pointer == forged  # left for a person to look at


def test_unsigned_pointers_are_converted_only_when_asked() -> None:
    """Re-signing never converts an unsigned pointer (issue 20: that laundered an attacker's pointer); asking
    the scheduled flow to is refused, and the explicit act is `edgefleet registry convert-unsigned`
    (tests/security/test_resign_launders_unsigned_pointer.py)."""
    from pydantic import ValidationError

    from edgefleet.kernel.contracts.manifest import ChannelPointer

    unsigned = ChannelPointer(model="birds", channel="stable", version="1.0.0", manifest_sha256="0" * 64)
    now = datetime.now(UTC)
    assert not needs_resign(unsigned, now, timedelta(days=7))
    assert not needs_resign(unsigned, now, None)
    assert not ResignParams(registry="/r").convert_unsigned
    with pytest.raises(ValidationError, match="convert_unsigned"):
        ResignParams(registry="/r", convert_unsigned=True)


def test_resign_deployment_has_a_schedule_shipped_off_and_valid_parameters() -> None:
    from prefect.flows import load_flow_from_entrypoint

    document = yaml.safe_load((REPO / "prefect.yaml").read_text())
    (deployment,) = [d for d in document["deployments"] if d["name"] == "resign-channels"]
    params = ResignParams.model_validate(deployment["parameters"]["params"])
    assert params.renew_within_days < params.signing.pointer_validity_days
    # A daily schedule is there, shipped off until its registry is configured (issue 22 item 10: on from the first
    # `prefect deploy` it acted on the placeholder ~/.edgefleet/registry).
    assert deployment["schedules"] and deployment["schedules"][0]["cron"]
    assert deployment["schedules"][0]["active"] is False
    flow = load_flow_from_entrypoint(deployment["entrypoint"])
    assert flow.name == "resign-channels"
