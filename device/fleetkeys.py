"""The fleet's device public keys, kept in the model registry: `fleet/devices/<device_id>.json`, read.

Written by `deploy-agent` (and the local fleet) after the agent made its key on the device, with
`edgefleet.flows.registry.fleetkeys.register_device_key`; read here by the fleet monitor to check each
telemetry message's signature.
"""

from __future__ import annotations

from datetime import datetime, timezone

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgefleet.device.registry.base import RegistryReader
from edgefleet.kernel.contracts.layout import FLEET_DEVICES_PREFIX, check_name
from edgefleet.kernel.contracts.names import DeviceId
from edgefleet.kernel.errors import RegistryError
from edgefleet.kernel.signing import public_key_from_bytes

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


def load_fleet_keys(registry: RegistryReader) -> dict[str, Ed25519PublicKey]:
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
