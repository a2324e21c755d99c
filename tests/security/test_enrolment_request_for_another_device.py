"""Issue 23, item 4: a device holding a token for itself asks to be enrolled as another device (to speak for it
in canary verdicts), or re-enrols an enrolled device with a new key. A token is bound to one device id; it
replaces an enrolled key only when the operator minted it to (`--replace`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.security.device_keys import Fleet, applied, refused
from tests.security.enrolment import Enrolment


@pytest.fixture
def enrolment(fleet: Fleet, tmp_path: Path) -> Enrolment:
    return Enrolment(fleet, tmp_path)


def test_a_token_for_one_device_does_not_enrol_another(enrolment: Enrolment, fleet_state) -> None:
    token, _ = enrolment.mint("cam-1")
    enrolment.file("cam-1", "cam-2", token)
    [approval] = enrolment.approve()
    assert not approval.enrolled and not approval.verdict.burn
    [(_, why)] = approval.verdict.refused
    assert "cam-2" in why and "cam-1" in why
    assert refused(enrolment.fleet.send(fleet_state, enrolment.fleet.monitor(), "cam-2",
                                        enrolment.device_key("cam-1")))
    assert not (enrolment.fleet.devices_dir / "cam-2.json").exists()


def test_a_token_does_not_replace_an_enrolled_key_unless_minted_to(enrolment: Enrolment, fleet_state) -> None:
    original = enrolment.fleet.enrol("cam-1")
    token, _ = enrolment.mint("cam-1")
    enrolment.file("impostor", "cam-1", token)
    [approval] = enrolment.approve()
    assert not approval.enrolled and "known to the fleet" in approval.detail
    monitor = enrolment.fleet.monitor()
    assert applied(enrolment.fleet.send(fleet_state, monitor, "cam-1", original))
    assert refused(enrolment.fleet.send(fleet_state, monitor, "cam-1", enrolment.device_key("impostor")))


def test_a_replace_token_re_enrols_a_reimaged_device(enrolment: Enrolment, fleet_state) -> None:
    original = enrolment.fleet.enrol("cam-1")
    token, _ = enrolment.mint("cam-1", replace=True)
    enrolment.file("cam-1-reimaged", "cam-1", token)
    [approval] = enrolment.approve()
    assert approval.enrolled, approval.detail
    monitor = enrolment.fleet.monitor()
    assert applied(enrolment.fleet.send(fleet_state, monitor, "cam-1", enrolment.device_key("cam-1-reimaged")))
    assert refused(enrolment.fleet.send(fleet_state, monitor, "cam-1", original))  # the old key is revoked
