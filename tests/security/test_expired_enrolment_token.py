"""Issue 23, item 4: an enrolment token used after its expiry (a token left in a provisioning script, a device
image, a ticket). It enrols nobody once expired, is burnt as expired, cannot be minted to live longer than
MAX_TOKEN_LIFETIME, and its expiry cannot be moved by editing the record."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from edgefleet.kernel.contracts.enrolment import MAX_TOKEN_LIFETIME, token_key
from tests.security.device_keys import Fleet, applied, refused
from tests.security.enrolment import T0, Enrolment


@pytest.fixture
def enrolment(fleet: Fleet, tmp_path: Path) -> Enrolment:
    return Enrolment(fleet, tmp_path)


def test_an_expired_token_enrols_nobody(enrolment: Enrolment, fleet_state) -> None:
    token, _ = enrolment.mint("cam-1", lifetime=timedelta(hours=1))
    enrolment.file("cam-1", "cam-1", token, now=T0 + timedelta(hours=2))
    [approval] = enrolment.approve(now=T0 + timedelta(hours=2))
    assert not approval.enrolled and approval.verdict.burn and "expired" in approval.verdict.reason
    assert refused(enrolment.fleet.send(fleet_state, enrolment.fleet.monitor(), "cam-1",
                                        enrolment.device_key("cam-1")))
    [again] = enrolment.approve(now=T0 + timedelta(minutes=30))  # a clock set back does not revive it
    assert not again.enrolled and "used" in again.verdict.reason


def test_a_token_in_time_enrols(enrolment: Enrolment, fleet_state) -> None:
    token, _ = enrolment.mint("cam-1", lifetime=timedelta(hours=1))
    enrolment.file("cam-1", "cam-1", token)
    [approval] = enrolment.approve(now=T0 + timedelta(minutes=59))
    assert approval.enrolled
    assert applied(enrolment.fleet.send(fleet_state, enrolment.fleet.monitor(), "cam-1",
                                        enrolment.device_key("cam-1")))


def test_a_token_cannot_be_minted_to_live_longer_than_the_limit(enrolment: Enrolment) -> None:
    with pytest.raises(ValueError, match="30 days"):
        enrolment.mint("cam-1", lifetime=MAX_TOKEN_LIFETIME + timedelta(seconds=1))


def test_an_expiry_moved_by_editing_the_record_is_refused(enrolment: Enrolment) -> None:
    token, _ = enrolment.mint("cam-1", lifetime=timedelta(hours=1))
    path = enrolment.fleet.registry.root / token_key(token.token_id)  # type: ignore[attr-defined]
    record = json.loads(path.read_text())
    path.write_text(json.dumps(record | {"expires_at": "2099-01-01T00:00:00Z"}))
    enrolment.file("cam-1", "cam-1", token)
    [approval] = enrolment.approve(now=T0 + timedelta(hours=2))
    assert not approval.enrolled and "does not hold" in approval.verdict.reason
