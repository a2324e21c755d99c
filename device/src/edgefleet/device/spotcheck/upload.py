"""The spot check's upload: one sample, create-only, under `spotcheck/<device_id>/` and nowhere else.

The keys come from the configured device id and a checked frame id (`kernel.contracts.spotcheck.sample_keys`),
and the record must name that device and frame, hash to the JPEG beside it and be signed (`SpotSample.signature`;
the operator takes no unsigned sample): a sample planted in the outbox for another device, under a name that is
no frame id, or left unsigned by an older agent, is refused, never uploaded. Objects are created once
(`if_generation_match=0` on GCS, the devices' `objectCreator` grant on `spotcheck/`): a retry after a lost
acknowledgement finds them there and moves on; nothing a device uploads replaces anything.
"""

from __future__ import annotations

import hashlib

from pydantic import ValidationError

from edgefleet.device.enrol import create_object
from edgefleet.device.registry.base import RegistryReader
from edgefleet.kernel.contracts.spotcheck import SpotSample, check_frame_id, device_prefix, sample_keys
from edgefleet.kernel.errors import EdgefleetError

JPEG_TYPE = "image/jpeg"
JSON_TYPE = "application/json"


class SampleRefused(EdgefleetError):
    """A sample in the outbox that is not this device's own: never uploaded."""


def checked_sample(device_id: str, frame: str, image: bytes, record: bytes) -> SpotSample:
    """The sample's record when it is this device's sample of `frame` for `image`.

    Raises:
        SampleRefused: a frame id that is none, a record that does not parse, names another device or frame,
            hashes to another image, or is unsigned.
    """
    fix = "remove the file from the outbox; only the agent writes there (check who else can write the agent root)"
    try:
        check_frame_id(frame)
        sample = SpotSample.model_validate_json(record)
    except (ValueError, ValidationError) as error:
        raise SampleRefused(f"spot check sample {frame[:64]!r} is not a valid sample: {error}", fix) from None
    if sample.device_id != device_id or sample.frame_id != frame:
        raise SampleRefused(f"spot check sample {frame} names device {sample.device_id} frame {sample.frame_id}, "
                            f"not {device_id} {frame}: refused", fix)
    if hashlib.sha256(image).hexdigest() != sample.image_sha256:
        raise SampleRefused(f"spot check sample {frame}: the JPEG does not match its record's hash", fix)
    if sample.signature is None:  # left in the outbox by an agent that did not sign: the operator would refuse it
        raise SampleRefused(f"spot check sample {frame} is not signed by the device key: refused",
                            "nothing to do: samples the agent takes now are signed")
    return sample


def upload_sample(registry: RegistryReader, device_id: str, frame: str, image: bytes, record: bytes) -> str:
    """Uploads one checked sample (JPEG, then its JSON); returns where its JSON is.

    Raises:
        SampleRefused: see `checked_sample`.
        RegistryError: the registry cannot be written (transient: retried by the caller).
    """
    checked_sample(device_id, frame, image, record)
    image_key, record_key = sample_keys(device_id, frame)
    prefix = device_prefix(device_id)
    if not (image_key.startswith(prefix) and record_key.startswith(prefix)):  # sample_keys' promise, kept here
        raise SampleRefused(f"spot check keys {image_key}, {record_key} are outside {prefix}", "report this bug")
    create_object(registry, image_key, image, JPEG_TYPE)
    create_object(registry, record_key, record, JSON_TYPE)
    return registry.describe(record_key)
