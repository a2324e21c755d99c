"""Stack configuration: defaults, parsing Pulumi's stored values, errors naming the key and the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from edgefleet.infra.config import InfraConfig
from edgefleet.infra.stack_config import KNOWN_KEYS, NAMESPACE, config_from_values
from edgefleet.kernel.errors import ConfigError
from tests.infra.support.testing import NOTIFICATION_CHANNEL, fleet_ca_pem

REPO = Path(__file__).resolve().parents[2]
CHANNEL = json.dumps({"notificationChannels": [NOTIFICATION_CHANNEL]})
CA = json.dumps({"trustAnchors": [fleet_ca_pem()]})


def test_the_project_a_channel_and_a_fleet_ca_are_required_and_defaults_are_hardened() -> None:
    config = config_from_values({"project": "my-project", "alerts": CHANNEL, "devices": CA})
    assert config.project == "my-project"
    assert config.devices.credentials == "x509"
    assert config.alerts.allow_without_channel is False
    assert config.propagation.api_wait_seconds > 0 and config.propagation.service_account_wait_seconds > 0
    assert config.telemetry.dead_letter_max_attempts >= 5
    assert config.telemetry.enforce_schema is True
    assert config.registry_bucket == "my-project-edgefleet-registry"
    assert config.registry_location == config.region
    assert config.bigquery is None


def test_grouped_keys_are_read_from_pulumis_json_text() -> None:
    config = config_from_values(
        {
            "project": "my-project",
            "fleetName": "lab",
            "telemetry": json.dumps({"deadLetterMaxAttempts": 9, "messageRetentionSeconds": 3600}),
            "registry": json.dumps({"bucket": "models-lab", "location": "EU"}),
            "alerts": json.dumps(
                {"silentMinutes": 3, "notificationChannels": ["projects/p/notificationChannels/7"]}
            ),
            "bigquery": json.dumps({"dataset": "fleet"}),
            "devices": CA,
        }
    )
    assert config.telemetry.dead_letter_max_attempts == 9
    assert config.telemetry.message_retention_seconds == 3600
    assert (config.registry_bucket, config.registry_location) == ("models-lab", "EU")
    assert config.alerts.notification_channels == ("projects/p/notificationChannels/7",)
    assert config.bigquery is not None and config.bigquery.table == "telemetry"


def test_the_example_stack_file_is_a_valid_config() -> None:
    stack = yaml.safe_load((REPO / "Pulumi.dev.yaml").read_text())["config"]
    prefix = f"{NAMESPACE}:"
    values = {
        key.removeprefix(prefix): value if isinstance(value, str) else json.dumps(value)
        for key, value in stack.items()
    }
    assert set(values) <= KNOWN_KEYS
    config = config_from_values(values, present_keys=values)
    # The example documents the defaults (besides the values every stack must choose): it must not drift.
    required = {"notification_channels": config.alerts.notification_channels}
    defaults = InfraConfig(project=config.project, alerts=required,
                           devices={"trust_anchors": config.devices.trust_anchors})
    assert config.model_dump(exclude={"project"}) == defaults.model_dump(exclude={"project"})
    assert config.devices.credentials == "x509" and config.alerts.notification_channels


@pytest.mark.parametrize(
    ("values", "key", "fix"),
    [
        ({}, "edgefleet:project", "pulumi config set edgefleet:project my-project"),
        ({"project": "123456789012"}, "edgefleet:project", "pulumi config set edgefleet:project"),
        (
            {"project": "my-project", "telemetry": '{"deadLetterMaxAttempts": 4}'},
            "edgefleet:telemetry.deadLetterMaxAttempts",
            "pulumi config set --path edgefleet:telemetry.deadLetterMaxAttempts",
        ),
        (
            {"project": "my-project", "telemetry": '{"messageRetentionSeconds": 60}'},
            "edgefleet:telemetry.messageRetentionSeconds",
            "--path",
        ),
        (
            {"project": "my-project", "alerts": '{"silentMinute": 5}'},
            "edgefleet:alerts.silentMinute",
            "pulumi config rm --path edgefleet:alerts.silentMinute",
        ),
        (
            {"project": "my-project", "alerts": '{"notificationChannels": ["email:me@example.com"]}'},
            "edgefleet:alerts.notificationChannels",
            "pulumi config set --path",
        ),
        ({"project": "my-project", "registry": "not json"}, "edgefleet:registry", "pulumi config set --path"),
        (
            {"project": "my-project", "registry": '{"bucket": "Bad_Bucket"}'},
            "edgefleet:registry.bucket",
            "--path",
        ),
    ],
)
def test_wrong_config_names_the_key_and_the_command(values: dict[str, str], key: str, fix: str) -> None:
    with pytest.raises(ConfigError) as raised:
        config_from_values(values)
    assert key in raised.value.message
    assert raised.value.fix is not None and fix in raised.value.fix


def test_misspelled_top_level_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="edgefleet:fleetname") as raised:
        config_from_values({"project": "my-project"}, present_keys=["project", "fleetname"])
    assert raised.value.fix == "fix the spelling or remove it: pulumi config rm edgefleet:fleetname"


def test_alerts_without_a_notification_channel_are_refused_at_preview_naming_the_key_and_both_fixes() -> None:
    with pytest.raises(ConfigError) as raised:
        config_from_values({"project": "my-project", "devices": CA})
    assert "edgefleet:alerts" in raised.value.message and "alert nobody" in raised.value.message
    assert raised.value.fix is not None
    assert "pulumi config set --path 'edgefleet:alerts.notificationChannels[0]'" in raised.value.fix
    assert "pulumi config set --path edgefleet:alerts.allowWithoutChannel true" in raised.value.fix


def test_alerts_without_a_channel_are_created_when_explicitly_allowed() -> None:
    config = config_from_values({"project": "my-project", "devices": CA,
                                 "alerts": json.dumps({"allowWithoutChannel": True})})
    assert config.alerts.notification_channels == () and config.alerts.allow_without_channel


def test_x509_device_credentials_without_the_fleet_ca_are_refused_with_the_key_fallback_named() -> None:
    with pytest.raises(ConfigError) as raised:
        config_from_values({"project": "my-project", "alerts": CHANNEL})
    assert "edgefleet:devices" in raised.value.message and "fleet CA" in raised.value.message
    assert raised.value.fix is not None and "'edgefleet:devices.trustAnchors[0]'" in raised.value.fix
    assert "pulumi config set --path edgefleet:devices.credentials key" in raised.value.fix
    fallback = config_from_values({"project": "my-project", "alerts": CHANNEL,
                                   "devices": json.dumps({"credentials": "key"})})
    assert fallback.devices.credentials == "key"


@pytest.mark.parametrize("pem", ["not a certificate", fleet_ca_pem() + fleet_ca_pem("another CA"),
                                 fleet_ca_pem().replace("MII", "MIX", 1)])
def test_a_trust_anchor_that_is_not_one_pem_certificate_is_refused(pem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        config_from_values({"project": "my-project", "alerts": CHANNEL,
                            "devices": json.dumps({"trustAnchors": [pem]})})
    assert "edgefleet:devices.trustAnchors.0" in raised.value.message
