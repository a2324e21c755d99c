"""Enrolment without inbound SSH: a one-time enrolment token, the device's request, and the approver's judgement.

1. The operator mints a token for one device id (`edgefleet fleet enrol-token create DEVICE_ID --expires 24h`):
   `fleet/enrol-tokens/<token_id>.json` (`edgefleet.enrol-token/1`) holds only the token's hash, the device id,
   the expiry and whether the device may replace an enrolled key, SIGNED by the fleet enrolment key (a registry
   writer cannot plant a token of its own). The operator hands the device the token text
   `eft1.<token_id>.<secret>` once (it is never stored anywhere readable).
2. The device (`edgefleet-agent enrol`) makes its own key and CREATES (never overwrites: create-only, the only
   write it has) `fleet/enrol-requests/<token_id>/<key_id>.json` (`edgefleet.enrol-request/1`): its device id,
   public key, the token secret, and its signature over all of it (proof it holds the private key).
3. The approver (`edgefleet fleet enrol-approve`, holding the enrolment key) judges every request
   (`judge_requests`, pure): a token signed by an enrolment key, unused, unexpired, for this device id, the
   secret matching the hash, the device signature holding, and exactly one such request (a second valid request
   means the secret leaked: the token is burnt and nobody is enrolled). It then burns the token (re-signed with
   `used_at`, compare-and-swap) and writes the device key record (`edgefleet.kernel.contracts.devicekey`) the
   way deploy-agent does. The device never writes a key record: a record it plants is unsigned by the
   enrolment key and every monitor refuses it.

A request reveals its token's secret to whoever can read the request prefix; the secret is then worth nothing:
the token is bound to one device id, used once, and a copied request with another key burns it (refusal, not
impersonation). Everything here is pure.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import AwareDatetime, Field

from edgefleet.kernel.contracts.devicekey import (
    KEY_ID_PATTERN,
    PUBLIC_KEY_PATTERN,
    SIGNATURE_PATTERN,
    SignedRecord,
    check_signature,
    payload_signed_bytes,
)
from edgefleet.kernel.contracts.layout import FLEET_ENROL_REQUESTS_PREFIX, FLEET_ENROL_TOKENS_PREFIX, check_name
from edgefleet.kernel.contracts.names import DeviceId
from edgefleet.kernel.errors import VerificationError
from edgefleet.kernel.trust.signatures import (
    ED25519_SIGNATURE_BYTES,
    key_id,
    public_key_from_bytes,
    public_key_raw,
    sign,
)

TOKEN_SCHEMA = "edgefleet.enrol-token/1"
REQUEST_SCHEMA = "edgefleet.enrol-request/1"
TOKEN_PREFIX = "eft1"
TOKEN_ID_BYTES = 8
SECRET_BYTES = 32
MAX_TOKEN_LIFETIME = timedelta(days=30)
"""The longest an enrolment token may be valid: a forgotten token does not stay a way in for ever."""
MAX_ENROL_RECORD_BYTES = 4096
"""A token record or request larger than this is refused unread (real ones are about 600 bytes)."""

_TOKEN_ID = r"^[0-9a-f]{16}$"
_SECRET = r"^[A-Za-z0-9_-]{43}$"  # urlsafe base64 of 32 bytes, unpadded
_HASH = r"^[0-9a-f]{64}$"
_TOKEN_TEXT = re.compile(rf"{TOKEN_PREFIX}\.([0-9a-f]{{16}})\.([A-Za-z0-9_-]{{43}})")
_UNSIGNED = "A" * 86 + "=="


class EnrolToken(SignedRecord):
    """One device's one-time enrolment token as the registry keeps it (`fleet/enrol-tokens/<token_id>.json`)."""

    schema_: Literal["edgefleet.enrol-token/1"] = Field(default=TOKEN_SCHEMA, alias="schema")
    token_id: str = Field(pattern=_TOKEN_ID)
    device_id: DeviceId
    secret_sha256: str = Field(pattern=_HASH, description="sha256 of the token's domain line, id and secret")
    created_at: AwareDatetime
    expires_at: AwareDatetime
    created_by: str | None = Field(default=None, max_length=256)
    replace: bool = Field(default=False, description="the device may replace the key it is enrolled with")
    used_at: AwareDatetime | None = None
    used_key_id: str | None = Field(default=None, pattern=KEY_ID_PATTERN)
    outcome: str = Field(default="", max_length=512, description="why it was burnt (approved or refused)")
    signer_key_id: str = Field(pattern=KEY_ID_PATTERN)
    signature: str = Field(pattern=SIGNATURE_PATTERN)


class EnrolRequest(SignedRecord):
    """A device asking to be enrolled (`fleet/enrol-requests/<token_id>/<key_id>.json`), signed by its own key."""

    schema_: Literal["edgefleet.enrol-request/1"] = Field(default=REQUEST_SCHEMA, alias="schema")
    token_id: str = Field(pattern=_TOKEN_ID)
    device_id: DeviceId
    public_key: str = Field(pattern=PUBLIC_KEY_PATTERN)
    key_id: str = Field(pattern=KEY_ID_PATTERN)
    secret: str = Field(pattern=_SECRET)
    created_at: AwareDatetime
    signature: str = Field(pattern=SIGNATURE_PATTERN)

    def key(self) -> Ed25519PublicKey:
        return public_key_from_bytes(self.public_key.encode(), source=f"enrolment request of {self.device_id}")


@dataclass(frozen=True)
class TokenText:
    """The token as handed to the device: `eft1.<token_id>.<secret>`."""

    token_id: str
    secret: str

    def __str__(self) -> str:
        return f"{TOKEN_PREFIX}.{self.token_id}.{self.secret}"


@dataclass(frozen=True)
class Verdict:
    """What the approver does with one token's requests: enrol `approved` (None: nobody), burn or keep the token."""

    token_id: str
    approved: EnrolRequest | None
    burn: bool
    reason: str
    refused: tuple[tuple[str, str], ...] = ()
    """(request key id, why) for every request not approved."""


def token_key(token_id: str) -> str:
    return f"{FLEET_ENROL_TOKENS_PREFIX}/{check_name('token id', token_id)}.json"


def request_key(token_id: str, request_key_id: str) -> str:
    return (f"{FLEET_ENROL_REQUESTS_PREFIX}/{check_name('token id', token_id)}/"
            f"{check_name('key id', request_key_id)}.json")


def parse_token(text: str) -> TokenText:
    """The token text a device was given.

    Raises:
        VerificationError: not `eft1.<16 hex>.<43 base64url>` (names no part of what was given).
    """
    match = _TOKEN_TEXT.fullmatch(text.strip())
    if match is None:
        raise VerificationError("the enrolment token is not of the form eft1.<token id>.<secret>",
                                "copy the whole token `edgefleet fleet enrol-token create` printed")
    return TokenText(match.group(1), match.group(2))


def new_token(random_bytes: bytes) -> TokenText:
    """A token from TOKEN_ID_BYTES + SECRET_BYTES random bytes (`os.urandom`, by the caller)."""
    if len(random_bytes) != TOKEN_ID_BYTES + SECRET_BYTES:
        raise ValueError(f"need {TOKEN_ID_BYTES + SECRET_BYTES} random bytes")
    secret = base64.urlsafe_b64encode(random_bytes[TOKEN_ID_BYTES:]).decode().rstrip("=")
    return TokenText(random_bytes[:TOKEN_ID_BYTES].hex(), secret)


def secret_hash(token_id: str, secret: str) -> str:
    return hashlib.sha256(f"{TOKEN_SCHEMA}\n{token_id}\n{secret}".encode()).hexdigest()


def _signature(private_key: Ed25519PrivateKey, payload: dict[str, object]) -> str:
    return base64.b64encode(sign(private_key, payload_signed_bytes(payload))).decode()


def sign_token(enrolment_key: Ed25519PrivateKey, token: EnrolToken | Mapping[str, object]) -> EnrolToken:
    """`token` (a record or its fields) signed by the enrolment key."""
    fields = token.model_dump(mode="json", by_alias=True) if isinstance(token, EnrolToken) else dict(token)
    draft = EnrolToken.model_validate(fields | {"signer_key_id": key_id(enrolment_key.public_key()),
                                                "signature": _UNSIGNED})
    payload = draft.model_dump(mode="json", by_alias=True)
    return EnrolToken.model_validate(payload | {"signature": _signature(enrolment_key, payload)})


def mint_token(enrolment_key: Ed25519PrivateKey, text: TokenText, *, device_id: str, now: datetime,
               lifetime: timedelta, by: str | None = None, replace: bool = False) -> EnrolToken:
    """The signed record of a new token (only the secret's hash in it).

    Raises:
        ValueError: a lifetime not in (0, MAX_TOKEN_LIFETIME].
    """
    if not timedelta(0) < lifetime <= MAX_TOKEN_LIFETIME:
        raise ValueError(f"an enrolment token lives between 0 and {MAX_TOKEN_LIFETIME.days} days, not {lifetime}")
    return sign_token(enrolment_key, {
        "token_id": text.token_id, "device_id": device_id, "secret_sha256": secret_hash(text.token_id, text.secret),
        "created_at": now, "expires_at": now + lifetime, "created_by": by, "replace": replace})


def burn_token(enrolment_key: Ed25519PrivateKey, token: EnrolToken, *, now: datetime, used_key_id: str | None,
               outcome: str) -> EnrolToken:
    """The token marked used (re-signed): it enrols nobody from then on."""
    fields = token.model_dump(mode="json", by_alias=True)
    return sign_token(enrolment_key, fields | {"used_at": now.isoformat(), "used_key_id": used_key_id,
                                               "outcome": outcome[:512]})


def make_request(device_key: Ed25519PrivateKey, text: TokenText, *, device_id: str, now: datetime) -> EnrolRequest:
    """The device's request, signed by its own key."""
    public = device_key.public_key()
    draft = EnrolRequest(token_id=text.token_id, device_id=device_id, key_id=key_id(public), secret=text.secret,
                         public_key=base64.b64encode(public_key_raw(public)).decode(), created_at=now,
                         signature=_UNSIGNED)
    payload = draft.model_dump(mode="json", by_alias=True)  # signed as any reader will dump it again
    return EnrolRequest.model_validate(payload | {"signature": _signature(device_key, payload)})


def _request_problem(token: EnrolToken, request_name: str, request: EnrolRequest) -> str | None:
    """Why one request cannot enrol its device with `token` (None: it can)."""
    if request.token_id != token.token_id:
        return f"it names token {request.token_id}, not {token.token_id}"
    if request.device_id != token.device_id:
        return f"it asks for device {request.device_id}; the token is for device {token.device_id}"
    if not hmac.compare_digest(secret_hash(token.token_id, request.secret), token.secret_sha256):
        return "its token secret is wrong (a forged request)"
    if request_name != request.key_id:
        return f"it is filed under {request_name}, not its key id {request.key_id}"
    try:
        key = request.key()
        if key_id(key) != request.key_id:
            return "its key id is not the id of its public key"
        raw = base64.b64decode(request.signature, validate=True)
        if len(raw) != ED25519_SIGNATURE_BYTES:
            return "its signature has the wrong length"
        key.verify(raw, request.signed_bytes())
    except (InvalidSignature, ValueError, binascii.Error, VerificationError):
        return "it is not signed by the key it presents"
    return None


def judge_requests(token: EnrolToken | None, requests: Sequence[tuple[str, EnrolRequest | str]], *,
                   enrolment_keys: Mapping[str, Ed25519PublicKey], now: datetime, token_id: str) -> Verdict:
    """What to do with the requests filed under one token. Pure.

    Args:
        token: the token record (None: there is none).
        requests: (the request's file name without `.json`, the parsed request or why it could not be parsed).
        enrolment_keys: key id -> the fleet's enrolment public keys.
        now: the approver's clock (timezone-aware).
    """
    if token is None:
        return _refuse_all(token_id, requests, "no such enrolment token", burn=False)
    try:
        check_signature(dict(enrolment_keys), token, source=f"enrolment token {token.token_id}")  # type: ignore[arg-type]
    except VerificationError as error:
        return _refuse_all(token_id, requests, f"the token record is not trusted: {error.message}", burn=False)
    if token.token_id != token_id:
        return _refuse_all(token_id, requests, f"the token record {token_id} names token {token.token_id}",
                           burn=False)
    if token.used_at is not None and requests and all(
            not isinstance(request, str) and request.key_id == token.used_key_id for _, request in requests):
        return Verdict(token_id, None, False, f"done: enrolled key {token.used_key_id} at "
                       f"{token.used_at:%Y-%m-%d %H:%M} UTC")
    if token.used_at is not None:
        return _refuse_all(token_id, requests, f"the token was used at {token.used_at:%Y-%m-%d %H:%M} UTC "
                           f"({token.outcome or 'burnt'}): a token enrols once", burn=False)
    if now >= token.expires_at:
        return _refuse_all(token_id, requests, f"the token expired at {token.expires_at:%Y-%m-%d %H:%M} UTC",
                           burn=True)
    valid: list[EnrolRequest] = []
    refused: list[tuple[str, str]] = []
    for name, request in requests:
        problem = request if isinstance(request, str) else _request_problem(token, name, request)
        if problem is not None:
            refused.append((name, problem))
        elif not isinstance(request, str):  # always so: a request that did not parse is its problem
            valid.append(request)
    if len(valid) > 1:
        reason = (f"{len(valid)} requests with different keys carry the token's secret: it leaked; nobody is "
                  "enrolled and the token is burnt")
        return Verdict(token_id, None, True, reason, tuple(refused) + tuple((r.key_id, reason) for r in valid))
    if not valid:
        return Verdict(token_id, None, False, "no valid request yet", tuple(refused))
    approved = valid[0]
    return Verdict(token_id, approved, True, f"approved key {approved.key_id} of {approved.device_id}",
                   tuple(refused))


def _refuse_all(token_id: str, requests: Sequence[tuple[str, object]], reason: str, *, burn: bool) -> Verdict:
    return Verdict(token_id, None, burn, reason, tuple((name, reason) for name, _ in requests))
