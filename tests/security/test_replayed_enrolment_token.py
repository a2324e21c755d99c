"""Issue 23, item 4: a one-time enrolment token used twice. A device's request shows its token's secret to
whoever reads the request prefix; replaying it (after the approval, or before it, racing the real device) must
never enrol another key: the token enrols once, and two keys carrying one secret burn it with nobody enrolled."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet.kernel.contracts.enrolment import EnrolRequest
from tests.security.device_keys import Fleet, applied, refused
from tests.security.enrolment import Enrolment


@pytest.fixture
def enrolment(fleet: Fleet, tmp_path: Path) -> Enrolment:
    return Enrolment(fleet, tmp_path)


def _secret_of(enrolment: Enrolment, filed) -> str:
    return EnrolRequest.model_validate_json(Path(filed.location).read_text()).secret


def test_the_device_with_the_token_is_enrolled_and_trusted(enrolment: Enrolment, fleet_state) -> None:
    token, _ = enrolment.mint("cam-1")
    enrolment.file("cam-1", "cam-1", token)
    [approval] = enrolment.approve()
    assert approval.enrolled, approval.detail
    monitor = enrolment.fleet.monitor()
    assert applied(enrolment.fleet.send(fleet_state, monitor, "cam-1", enrolment.device_key("cam-1")))


def test_a_token_replayed_after_its_approval_enrols_nobody_else(enrolment: Enrolment, fleet_state) -> None:
    token, _ = enrolment.mint("cam-1")
    filed = enrolment.file("cam-1", "cam-1", token)
    enrolment.approve()
    stolen = f"eft1.{token.token_id}.{_secret_of(enrolment, filed)}"  # read from the request prefix
    enrolment.file("attacker", "cam-1", stolen)
    [approval] = enrolment.approve()
    assert not approval.enrolled and "used" in approval.verdict.reason
    monitor = enrolment.fleet.monitor()
    assert refused(enrolment.fleet.send(fleet_state, monitor, "cam-1", enrolment.device_key("attacker")))
    assert applied(enrolment.fleet.send(fleet_state, monitor, "cam-1", enrolment.device_key("cam-1")))


def test_a_token_copied_before_its_approval_is_burnt_with_nobody_enrolled(enrolment: Enrolment, fleet_state) -> None:
    token, _ = enrolment.mint("cam-1")
    filed = enrolment.file("cam-1", "cam-1", token)
    enrolment.file("attacker", "cam-1", f"eft1.{token.token_id}.{_secret_of(enrolment, filed)}")
    [approval] = enrolment.approve()
    assert not approval.enrolled and approval.verdict.burn and "leaked" in approval.verdict.reason
    monitor = enrolment.fleet.monitor()
    assert refused(enrolment.fleet.send(fleet_state, monitor, "cam-1", enrolment.device_key("attacker")))
    assert refused(enrolment.fleet.send(fleet_state, monitor, "cam-1", enrolment.device_key("cam-1")))
    [again] = enrolment.approve()  # the burnt token stays burnt
    assert not again.enrolled and "used" in again.verdict.reason


def test_a_request_cannot_be_replaced_once_filed(enrolment: Enrolment) -> None:
    token, _ = enrolment.mint("cam-1")
    first = enrolment.file("cam-1", "cam-1", token)
    again = enrolment.file("cam-1", "cam-1", token)  # the same device, the same key: create-only
    assert not first.already_filed and again.already_filed and first.location == again.location


def test_the_enrolled_request_is_reported_done_and_a_replay_beside_it_refused(enrolment: Enrolment) -> None:
    token, _ = enrolment.mint("cam-1")
    filed = enrolment.file("cam-1", "cam-1", token)
    enrolment.approve()
    [done] = enrolment.approve()  # the device's own request is still there: not a replay
    assert not done.enrolled and done.verdict.reason.startswith("done") and done.verdict.refused == ()
    enrolment.file("attacker", "cam-1", f"eft1.{token.token_id}.{_secret_of(enrolment, filed)}")
    [replayed] = enrolment.approve()
    assert not replayed.enrolled and "used" in replayed.verdict.reason and len(replayed.verdict.refused) == 2
