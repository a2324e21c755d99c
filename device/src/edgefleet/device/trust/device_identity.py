"""The device's own identity: an Ed25519 key made on the device, and the signature of each telemetry message.

The agent makes its key on first start (`<root>/keys/device.key`, mode 0600; the private key never leaves
the device) and writes the public key beside it (`device.pub`). `deploy-agent` (and the local fleet) publish
the public key with the fleet (`fleet/devices/<device_id>.json` in the registry,
`edgefleet.kernel.contracts.devicekey`).

Each telemetry message carries two Pub/Sub attributes, so the message schema does not change:
    epoch  the spool's epoch (a new spool, e.g. after a corrupt one was quarantined, starts a new epoch and
           seq starts again at 1; the monitor dedupes on (device, epoch, seq))
    sig    base64 of Ed25519 over `telemetry_signed_bytes(data, device_id, epoch)`

The same key signs each spot-check sample record (`sign_spot_sample`, in the spot check's own thread): every
device shares one service account, so only this signature tells the operator which device made a sample.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edgefleet.kernel.contracts.layout import ATTR_DEVICE_ID, ATTR_EPOCH, ATTR_SIGNATURE
from edgefleet.kernel.contracts.spotcheck import SpotSample
from edgefleet.kernel.trust.signatures import (
    ED25519_SIGNATURE_BYTES,
    generate_keypair,
    load_private_key,
    public_key_raw,
    save_private_key,
    save_public_key,
)

DEVICE_KEY_FILE = "keys/device.key"
DEVICE_PUBLIC_KEY_FILE = "keys/device.pub"
_DOMAIN = b"edgefleet.telemetry-signature/1\n"
MAX_EPOCH = 2**53 - 1


def device_key_path(root: str | os.PathLike[str]) -> Path:
    return Path(root).expanduser() / DEVICE_KEY_FILE


def load_or_create_device_key(root: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """The device's private key, made on first use (0600) with its public key beside it (`device.pub`).

    Raises:
        VerificationError: the key file exists but is unreadable, not an Ed25519 key, or readable by others.
    """
    path = device_key_path(root)
    public_path = Path(root).expanduser() / DEVICE_PUBLIC_KEY_FILE
    if not path.exists():
        private_key, public_key = generate_keypair()
        save_private_key(private_key, path)
        save_public_key(public_key, public_path, encoding="base64")
        return private_key
    key = load_private_key(path)  # refuses a key file readable by group or others
    if not public_path.exists():
        save_public_key(key.public_key(), public_path, encoding="base64")
    return key


def public_key_text(public_key: Ed25519PublicKey) -> str:
    """The raw public key in base64 (one line): how fleet records and `device.pub` hold it."""
    return base64.b64encode(public_key_raw(public_key)).decode()


def telemetry_signed_bytes(data: bytes, device_id: str, epoch: int) -> bytes:
    """What a telemetry signature covers: a domain line, the sender, the spool epoch, the message bytes."""
    return _DOMAIN + device_id.encode() + b"\n" + str(epoch).encode() + b"\n" + data


def sign_telemetry(private_key: Ed25519PrivateKey, data: bytes, device_id: str, epoch: int) -> dict[str, str]:
    """The attributes that authenticate one message: `epoch` and `sig`."""
    signature = private_key.sign(telemetry_signed_bytes(data, device_id, epoch))
    return {ATTR_EPOCH: str(epoch), ATTR_SIGNATURE: base64.b64encode(signature).decode()}


def parse_epoch(attributes: dict[str, str] | object) -> int | None:
    """The `epoch` attribute as an integer (None when absent); ValueError when it is not a bounded integer."""
    get: object = getattr(attributes, "get", None)  # a dict, or a Pub/Sub message's protobuf map
    text = get(ATTR_EPOCH) if callable(get) else None
    if text is None or text == "":
        return None
    if not (isinstance(text, str) and text.isdigit() and len(text) <= 16) or int(text) > MAX_EPOCH:
        raise ValueError(f"epoch attribute {str(text)[:32]!r} is not an integer in 0..{MAX_EPOCH}")
    return int(text)


def telemetry_signature_problem(
    public_key: Ed25519PublicKey, data: bytes, attributes: dict[str, str]
) -> str | None:
    """Why a message's signature does not hold (None: it does). Names no secret."""
    device_id = attributes.get(ATTR_DEVICE_ID) or ""
    text = attributes.get(ATTR_SIGNATURE)
    if not text:
        return f"message from {device_id} is not signed"
    try:
        epoch = parse_epoch(attributes)
        signature = base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error) as error:
        return f"message from {device_id} has a malformed signature or epoch ({error})"
    if epoch is None:
        return f"message from {device_id} is signed but has no epoch"
    if len(signature) != ED25519_SIGNATURE_BYTES:
        return f"message from {device_id} has a signature of {len(signature)} bytes"
    try:
        public_key.verify(signature, telemetry_signed_bytes(data, device_id, epoch))
    except InvalidSignature:
        return f"message claiming to be from {device_id} is not signed by that device's key"
    return None


def sign_spot_sample(private_key: Ed25519PrivateKey, sample: SpotSample) -> SpotSample:
    """`sample` with its `signature` (over `SpotSample.signed_bytes`: the record, hence its JPEG's hash)."""
    signature = private_key.sign(sample.signed_bytes())
    return sample.model_copy(update={"signature": base64.b64encode(signature).decode()})


def spot_sample_signature_problem(public_key: Ed25519PublicKey, sample: SpotSample) -> str | None:
    """Why `sample`'s signature does not hold for the device key `public_key` (None: it does). Names no secret."""
    if sample.signature is None:
        return f"sample {sample.frame_id} of {sample.device_id} is not signed"
    try:
        public_key.verify(base64.b64decode(sample.signature, validate=True), sample.signed_bytes())
    except (InvalidSignature, binascii.Error, ValueError):
        return f"sample {sample.frame_id} is not signed by the key of device {sample.device_id}"
    return None
