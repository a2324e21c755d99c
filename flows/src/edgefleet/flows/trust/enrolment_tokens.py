"""Enrolment without inbound SSH, the pipeline's side: mint one-time tokens, judge and approve device requests.

The contract and the judgement are `edgefleet.kernel.contracts.enrolment` (pure); this module reads and writes
the registry: `create_token` stores the signed token record (the secret's hash only), `approve_requests` reads
every `fleet/enrol-requests/<token_id>/`, judges it against its token, burns the token (compare-and-swap, so two
approvers racing enrol once) and then writes the device key record with `register_device_key`, the same record
deploy-agent writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from edgefleet.flows.registry.base import RegistryWriter
from edgefleet.flows.trust.device_key_records import register_device_key
from edgefleet.kernel.contracts.enrolment import (
    MAX_ENROL_RECORD_BYTES,
    SECRET_BYTES,
    TOKEN_ID_BYTES,
    EnrolRequest,
    EnrolToken,
    TokenText,
    Verdict,
    burn_token,
    judge_requests,
    mint_token,
    new_token,
    token_key,
)
from edgefleet.kernel.contracts.layout import FLEET_ENROL_REQUESTS_PREFIX, check_name
from edgefleet.kernel.errors import ConflictError, EdgefleetError
from edgefleet.kernel.trust.signatures import key_id

APPROVER = "enrol-approve"


@dataclass(frozen=True)
class Approval:
    """One token's outcome: the verdict, and whether the device key record was written."""

    verdict: Verdict
    enrolled: bool
    detail: str


def create_token(registry: RegistryWriter, device_id: str, *, enrolment_key: Ed25519PrivateKey, now: datetime,
                 lifetime: timedelta, by: str | None = None, replace: bool = False) -> tuple[TokenText, EnrolToken]:
    """Mints a one-time token for `device_id`; stores its signed record (hash only); returns the token text to
    hand the device (shown once) and the record.

    Raises:
        ValueError: a bad device id or lifetime.
    """
    check_name("device id", device_id)
    text = new_token(os.urandom(TOKEN_ID_BYTES + SECRET_BYTES))
    record = mint_token(enrolment_key, text, device_id=device_id, now=now, lifetime=lifetime, by=by,
                        replace=replace)
    registry.put_json(token_key(text.token_id), record, expected_generation=0)
    return text, record


def pending_token_ids(registry: RegistryWriter) -> list[str]:
    """The token ids that have requests filed (`fleet/enrol-requests/<token_id>/...`)."""
    prefix = f"{FLEET_ENROL_REQUESTS_PREFIX}/"
    return sorted({key[len(prefix):].split("/", 1)[0] for key in registry.list_json(prefix)
                   if "/" in key[len(prefix):]})


def _requests(registry: RegistryWriter, token_id: str) -> list[tuple[str, EnrolRequest | str]]:
    """(file name without .json, the request or why it cannot be read) for each request under the token."""
    found: list[tuple[str, EnrolRequest | str]] = []
    for record_key in registry.list_json(f"{FLEET_ENROL_REQUESTS_PREFIX}/{token_id}/"):
        name = record_key.rsplit("/", 1)[-1][: -len(".json")]
        try:
            found.append((name, EnrolRequest.model_validate(registry.get_json_bounded(record_key,
                                                                                     MAX_ENROL_RECORD_BYTES))))
        except (ValidationError, EdgefleetError, ValueError) as error:
            found.append((name, f"unreadable request ({str(error).splitlines()[0][:200]})"))
    return found


def _token(registry: RegistryWriter, token_id: str) -> tuple[EnrolToken | None, int]:
    record_key = token_key(token_id)
    generation = registry.read_json(record_key).generation
    value = registry.get_json_bounded(record_key, MAX_ENROL_RECORD_BYTES)
    if value is None:
        return None, 0
    try:
        return EnrolToken.model_validate(value), generation
    except ValidationError:
        return None, generation


def approve_token(registry: RegistryWriter, token_id: str, *, enrolment_key: Ed25519PrivateKey,
                  now: datetime) -> Approval:
    """Judges the requests filed under one token; burns it, then enrols the approved device (if any).

    Raises:
        ConflictError: the token record changed while it was judged (another approver): run again.
    """
    check_name("token id", token_id)
    token, generation = _token(registry, token_id)
    public = enrolment_key.public_key()
    verdict = judge_requests(token, _requests(registry, token_id), enrolment_keys={key_id(public): public},
                             now=now, token_id=token_id)
    if token is None or not verdict.burn:
        return Approval(verdict, False, verdict.reason)
    approved = verdict.approved
    burnt = burn_token(enrolment_key, token, now=now, used_key_id=approved.key_id if approved else None,
                       outcome=verdict.reason)
    registry.put_json(token_key(token_id), burnt, expected_generation=generation)  # the token is spent first
    if approved is None:
        return Approval(verdict, False, verdict.reason)
    try:
        register_device_key(registry, approved.device_id, approved.key(), enrolment_key=enrolment_key,
                            by=f"{APPROVER} (token {token_id})", replace=token.replace)
    except ConflictError as error:
        return Approval(verdict, False, f"token burnt, device not enrolled: {error.message} (fix: {error.fix})")
    return Approval(verdict, True, verdict.reason)


def approve_requests(registry: RegistryWriter, *, enrolment_key: Ed25519PrivateKey, now: datetime) -> list[Approval]:
    """`approve_token` for every token with requests filed; one failing token does not stop the others."""
    results = []
    for token_id in pending_token_ids(registry):
        try:
            results.append(approve_token(registry, token_id, enrolment_key=enrolment_key, now=now))
        except (EdgefleetError, ValueError) as error:
            verdict = Verdict(token_id, None, False, str(error))
            results.append(Approval(verdict, False, f"not judged: {error}"))
    return results
