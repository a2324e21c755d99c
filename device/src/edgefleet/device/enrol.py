"""`edgefleet-agent enrol`: the device asks to be enrolled with a one-time token, over no inbound connection.

The device makes (or keeps) its own key (`edgefleet.device.trust.device_identity`), and CREATES one object,
`fleet/enrol-requests/<token_id>/<key_id>.json` (`edgefleet.kernel.contracts.enrolment`): create-only (an
existing object is never replaced; on GCS `if_generation_match=0`, which a device identity holding only
`roles/storage.objectCreator` on that prefix can do). It never writes a key record: the approver, holding the
fleet enrolment key, does. `wait_enrolled` reads `fleet/devices/<device_id>.json` until it names this key.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import cast

from edgefleet.device.registry.base import RegistryReader
from edgefleet.device.trust.device_identity import load_or_create_device_key
from edgefleet.kernel.contracts.devicekey import MAX_RECORD_BYTES, device_key_record_key
from edgefleet.kernel.contracts.enrolment import EnrolRequest, make_request, parse_token, request_key
from edgefleet.kernel.errors import ConflictError, EdgefleetError, RegistryError
from edgefleet.kernel.trust.signatures import key_id

ENROL_POLL_S = 5.0
"""How often `wait_enrolled` reads the device's key record."""


@dataclass(frozen=True)
class EnrolFiled:
    """The request the device filed: where, and its key id."""

    location: str
    key_id: str
    already_filed: bool


def create_object(registry: RegistryReader, key: str, data: bytes, content_type: str = "application/json") -> bool:
    """Creates `key` with `data` unless it exists (never replaces); returns False when it existed. (Also the spot
    check's samples: `edgefleet.device.spotcheck.upload`.)

    Raises:
        RegistryError: the registry cannot be written (names the permission a device needs).
    """
    from edgefleet.device.registry.local import LocalRegistryReader

    if isinstance(registry, LocalRegistryReader):
        path = registry.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return True
    return _create_gcs_object(registry, key, data, content_type)


def _create_gcs_object(registry: RegistryReader, key: str, data: bytes, content_type: str) -> bool:
    from edgefleet.device.registry.gcs import GcsRegistryReader

    if not isinstance(registry, GcsRegistryReader):
        raise RegistryError(f"cannot create {key} in {registry.uri}", "use a gs:// or local registry")
    # The reader's own object naming and error mapping (enrolment is the one object a device creates). For pyright:
    # google-cloud-storage leaves most parameters unannotated, and types `timeout` int though it takes seconds.
    blob = registry._bucket().blob(  # pyright: ignore[reportPrivateUsage, reportUnknownMemberType]  # noqa: SLF001
        registry._object(key))  # pyright: ignore[reportPrivateUsage]  # noqa: SLF001
    try:
        with registry._errors(f"creating {registry.describe(key)}"):  # pyright: ignore[reportPrivateUsage]  # noqa: SLF001
            blob.upload_from_string(  # pyright: ignore[reportUnknownMemberType]
                data, content_type=content_type, if_generation_match=0,
                timeout=registry.options.request_timeout_s)  # pyright: ignore[reportArgumentType]
    except ConflictError:
        return False
    return True


def file_request(registry: RegistryReader, root: str | os.PathLike[str], device_id: str, token: str, *,
                 now: datetime | None = None) -> EnrolFiled:
    """Makes the device key (if needed) and files its enrolment request with `token`.

    Raises:
        VerificationError: the token text is malformed; the device key file is unusable.
        RegistryError: the request cannot be written.
    """
    text = parse_token(token)
    device_key = load_or_create_device_key(root)
    request = make_request(device_key, text, device_id=device_id, now=now or datetime.now(timezone.utc))
    key = request_key(text.token_id, request.key_id)
    data = request.model_dump_json(by_alias=True).encode()
    created = create_object(registry, key, data)
    return EnrolFiled(registry.describe(key), request.key_id, already_filed=not created)


def enrolled_key_id(registry: RegistryReader, device_id: str) -> str | None:
    """The key id the fleet's record for `device_id` names (None: no readable record yet). Trust is the
    monitor's business; the device only learns whether its request went through."""
    try:
        value: object = registry.get_json_bounded(device_key_record_key(device_id), MAX_RECORD_BYTES)
    except EdgefleetError:
        return None
    # A JSON object: the isinstance narrowing leaves its key and value types unknown.
    named = cast("dict[object, object]", value).get("key_id") if isinstance(value, dict) else None
    return named if isinstance(named, str) else None


def wait_enrolled(registry: RegistryReader, device_id: str, root: str | os.PathLike[str], *, timeout_s: float,
                  poll_s: float = ENROL_POLL_S) -> bool:
    """True once the fleet's record for `device_id` names this device's key; False after `timeout_s`."""
    mine = key_id(load_or_create_device_key(root).public_key())
    deadline = time.monotonic() + timeout_s
    while enrolled_key_id(registry, device_id) != mine:
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)
    return True


def read_token_argument(token: str | None, token_file: Path | None) -> str:
    """The token from `--token` / `EDGEFLEET_ENROL_TOKEN` or a file (first line).

    Raises:
        EdgefleetError: neither given.
    """
    if token:
        return token
    if token_file is not None:
        try:
            return token_file.read_text().strip()
        except OSError as error:
            raise EdgefleetError(f"enrolment token file {token_file} cannot be read ({error.strerror})",
                                 "give the file the operator's token was saved to") from error
    raise EdgefleetError("no enrolment token given", "pass --token-file FILE (or set EDGEFLEET_ENROL_TOKEN) with "
                         "the token `edgefleet fleet enrol-token create DEVICE_ID` printed")


__all__ = ["EnrolFiled", "EnrolRequest", "file_request", "wait_enrolled", "create_object"]
