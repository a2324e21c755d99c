"""Issue 23, item 4: enrolment requests without the token. Anyone who can write the request prefix (every
device) files a request for a device with a guessed secret, a request signed by another key than it presents,
or plants a token record of their own beside it. None enrols anybody, and the forgeries do not spend the real
device's token."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from pathlib import Path

import pytest

from edgefleet.device.enrol import create_object
from edgefleet.kernel.contracts.enrolment import (
    TokenText,
    make_request,
    mint_token,
    request_key,
    token_key,
)
from edgefleet.kernel.trust.signatures import generate_keypair
from tests.security.device_keys import Fleet, applied, refused
from tests.security.enrolment import T0, Enrolment


@pytest.fixture
def enrolment(fleet: Fleet, tmp_path: Path) -> Enrolment:
    return Enrolment(fleet, tmp_path)


def test_a_guessed_secret_enrols_nobody_and_leaves_the_token_to_its_device(enrolment: Enrolment,
                                                                            fleet_state) -> None:
    token, _ = enrolment.mint("cam-1")
    guessed = TokenText(token.token_id, "A" * 43)  # the token id is not secret: the request prefix shows it
    enrolment.file("attacker", "cam-1", guessed)
    [approval] = enrolment.approve()
    assert not approval.enrolled and not approval.verdict.burn
    assert "secret is wrong" in approval.verdict.refused[0][1]
    monitor = enrolment.fleet.monitor()
    assert refused(enrolment.fleet.send(fleet_state, monitor, "cam-1", enrolment.device_key("attacker")))
    enrolment.file("cam-1", "cam-1", token)  # the real device, later: its token still works
    [approval] = enrolment.approve()
    assert approval.enrolled, approval.detail
    assert refused(enrolment.fleet.send(fleet_state, monitor, "cam-1", enrolment.device_key("attacker")))


def test_a_request_presenting_a_key_it_is_not_signed_by_is_refused(enrolment: Enrolment) -> None:
    token, _ = enrolment.mint("cam-1")
    signer, victim = generate_keypair()[0], generate_keypair()[0]
    request = make_request(signer, token, device_id="cam-1", now=T0)
    victim_request = make_request(victim, token, device_id="cam-1", now=T0)
    forged = request.model_dump(mode="json", by_alias=True) | {
        "public_key": victim_request.public_key, "key_id": victim_request.key_id}
    create_object(enrolment.device_view, request_key(token.token_id, victim_request.key_id),
                  json.dumps(forged).encode())
    [approval] = enrolment.approve()
    assert not approval.enrolled
    assert "not signed by the key it presents" in approval.verdict.refused[0][1]


def test_a_planted_token_record_enrols_nobody(enrolment: Enrolment, fleet_state) -> None:
    own_key, _ = generate_keypair()  # the bucket writer's key, not the fleet enrolment key
    planted = TokenText("0123456789abcdef", base64.urlsafe_b64encode(bytes(32)).decode().rstrip("="))
    record = mint_token(own_key, planted, device_id="cam-9", now=T0, lifetime=timedelta(days=1))
    create_object(enrolment.device_view, token_key(planted.token_id), record.model_dump_json(by_alias=True).encode())
    enrolment.file("attacker", "cam-9", planted)
    [approval] = enrolment.approve()
    assert not approval.enrolled and "not a fleet enrolment key" in approval.verdict.reason
    assert refused(enrolment.fleet.send(fleet_state, enrolment.fleet.monitor(), "cam-9",
                                        enrolment.device_key("attacker")))


def test_a_token_record_edited_after_signing_enrols_nobody(enrolment: Enrolment) -> None:
    token, _ = enrolment.mint("cam-1")
    path = enrolment.fleet.registry.root / token_key(token.token_id)  # type: ignore[attr-defined]
    record = json.loads(path.read_text())
    path.write_text(json.dumps(record | {"device_id": "cam-2"}))  # a bucket writer retargets it
    enrolment.file("attacker", "cam-2", token)
    [approval] = enrolment.approve()
    assert not approval.enrolled and "does not hold" in approval.verdict.reason


def test_a_damaged_request_is_refused_by_name(enrolment: Enrolment, fleet_state) -> None:
    token, _ = enrolment.mint("cam-1")
    create_object(enrolment.device_view, request_key(token.token_id, "0" * 16), b"{not json")
    enrolment.file("cam-1", "cam-1", token)
    [approval] = enrolment.approve()
    assert approval.enrolled  # one damaged request does not stop the real one
    assert [name for name, _ in approval.verdict.refused] == ["0" * 16]
    assert applied(enrolment.fleet.send(fleet_state, enrolment.fleet.monitor(), "cam-1",
                                        enrolment.device_key("cam-1")))
