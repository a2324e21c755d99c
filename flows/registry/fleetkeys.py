"""Registering a device's public key with the fleet: `fleet/devices/<device_id>.json` in the model registry.

Done by `deploy-agent` (and the local fleet) after the agent made its key on the device; the fleet monitor
reads the records (`edgefleet.device.fleetkeys.load_fleet_keys`). A record changes only by compare-and-swap,
and a different key for a known device is refused unless explicitly replaced (`replace=True`: a re-imaged
device), so a stolen pipeline step cannot quietly swap a device's key.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edgefleet.device.fleetkeys import DeviceKeyRecord, device_key_record_key
from edgefleet.device.identity import public_key_text
from edgefleet.flows.registry.base import RegistryWriter
from edgefleet.kernel.errors import ConflictError
from edgefleet.kernel.signing import key_id


def register_device_key(
    registry: RegistryWriter,
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
