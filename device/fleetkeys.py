"""The fleet's device public keys, kept in the model registry: `fleet/devices/<device_id>.json`.

Written by `deploy-agent` (and the local fleet) after the agent made its key on the device; read by the
fleet monitor to check each telemetry message's signature. A record changes only by compare-and-swap, and
a different key for a known device is refused unless explicitly replaced (`replace=True`: a re-imaged
device), so a stolen pipeline step cannot quietly swap a device's key.
"""

from __future__ import annotations

from datetime import datetime, timezone

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgefleet.device.identity import public_key_text
from edgefleet.device.registry.base import Registry
from edgefleet.kernel.contracts.layout import FLEET_DEVICES_PREFIX, check_name
from edgefleet.kernel.contracts.names import DeviceId
from edgefleet.kernel.errors import ConflictError, RegistryError
from edgefleet.kernel.signing import key_id, public_key_from_bytes

DEVICE_KEY_SCHEMA = "edgefleet.device-key/1"


class DeviceKeyRecord(BaseModel):
    """One device's public key as the fleet knows it."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    schema_: str = Field(default=DEVICE_KEY_SCHEMA, alias="schema")
    device_id: DeviceId
    public_key: str = Field(description="the raw Ed25519 public key, base64")
    key_id: str
    added_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    added_by: str | None = None

    def key(self) -> Ed25519PublicKey:
        return public_key_from_bytes(self.public_key.encode(), source=f"device key record of {self.device_id}")


def device_key_record_key(device_id: str) -> str:
    return f"{FLEET_DEVICES_PREFIX}/{check_name('device id', device_id)}.json"


def register_device_key(
    registry: Registry,
    device_id: str,
    public_key: Ed25519PublicKey,
    *,
    by: str | None = None,
    replace: bool = False,
) -> DeviceKeyRecord:
    """Publishes a device's public key with the fleet (idempotent for the same key).

    Raises:
        ConflictError: the device is known with another key and `replace` is False.
    """
    key_file = device_key_record_key(device_id)
    current = registry.read_json(key_file)
    record = DeviceKeyRecord(
        device_id=device_id, public_key=public_key_text(public_key), key_id=key_id(public_key), added_by=by
    )
    if current.value is not None:
        known = DeviceKeyRecord.model_validate(current.value)
        if known.public_key == record.public_key:
            return known
        if not replace:
            raise ConflictError(
                f"device {device_id} is known to the fleet with key {known.key_id}, and now presents key "
                f"{record.key_id}",
                "if the device was re-imaged or its key replaced on purpose, register it again with replace "
                "(deploy-agent: replace_device_key: true); otherwise treat the device as compromised",
            )
    registry.put_json(key_file, record, expected_generation=current.generation)
    return record


def load_fleet_keys(registry: Registry) -> dict[str, Ed25519PublicKey]:
    """device_id -> public key for every device record in the registry (a damaged record is an error).

    Raises:
        RegistryError: a record does not parse.
    """
    keys: dict[str, Ed25519PublicKey] = {}
    for record_key in registry.list_json(f"{FLEET_DEVICES_PREFIX}/"):
        value = registry.get_json(record_key)
        try:
            record = DeviceKeyRecord.model_validate(value)
        except ValidationError as error:
            raise RegistryError(
                f"device key record {registry.describe(record_key)} is damaged ({error.errors()[0]['msg']})",
                "register the device's key again (deploy-agent) or remove the record",
            ) from error
        keys[record.device_id] = record.key()
    return keys
