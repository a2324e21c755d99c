"""The stack configuration's models: camelCase keys, derived names and the cross-field rules, without a stack."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from edgefleet.infra.config import NO_CHANNEL, NO_TRUST_ANCHOR, AlertSettings, DeviceSettings, InfraConfig
from tests.infra.support.testing import NOTIFICATION_CHANNEL, fleet_ca_pem


def test_models_take_the_stacks_camelcase_keys_and_derive_the_registry_names() -> None:
    config = InfraConfig.model_validate({
        "project": "my-project",
        "fleetName": "birds",
        "alerts": {"notificationChannels": [NOTIFICATION_CHANNEL]},
        "devices": {"trustAnchors": [fleet_ca_pem()]},
        "registry": {"location": "EU"},
    })
    assert config.fleet_name == "birds"
    assert config.registry_bucket == "my-project-birds-registry"
    assert config.registry_location == "EU"
    assert config.fleet_state is None


@pytest.mark.parametrize(
    ("model", "values", "rule"),
    [
        (AlertSettings, {}, NO_CHANNEL),
        (DeviceSettings, {"credentials": "x509"}, NO_TRUST_ANCHOR),
    ],
)
def test_cross_field_rules_refuse_a_section_with_their_message(
    model: type[AlertSettings | DeviceSettings], values: dict[str, object], rule: str
) -> None:
    with pytest.raises(ValidationError, match=rule):
        model.model_validate(values)


def test_the_rules_fallbacks_are_accepted() -> None:
    assert AlertSettings.model_validate({"allowWithoutChannel": True}).notification_channels == ()
    assert DeviceSettings.model_validate({"credentials": "key"}).trust_anchors == ()
