"""The spot check's samples as the operator takes them: only those the folder's device signed (issue 25).

Every device shares one service account, so IAM keeps devices inside `spotcheck/` but not inside their own
folder. A sample under `spotcheck/<device_id>/<frame_id>` is taken (offered by `edgefleet spotcheck pending`,
imported by `import`) only when (`sample_problem`, pure):
- its record names that device and that frame (a signed sample of device A copied into B's folder, or an old
  sample under a new frame id, names another device or frame, or no longer matches its signature);
- the device has a key record the operator trusts (`fleet/devices/<id>.json` signed by a fleet enrolment key,
  its key not revoked: `monitor.device_key_reader.load_device_key`), and that key signed the record
  (`device_identity.spot_sample_signature_problem`);
- the JPEG beside it hashes to the record's `image_sha256` (so the signature covers the frame too);
- its model version is published in the registry (`models/<model>/<version>/`: a sample of a version nobody
  released is never labelled; one listing per model per reader);
- its frame is one the device's sampler picks (`sampler_problem`): the share the record states is at most the
  share the operator expects (`expected_share`, the fleet's `spot_check.share`), and the hash of (device id,
  run, sequence: the frame id) falls under that share (`edgefleet.device.spotcheck.sampler.in_sample`). A
  compromised device signs whatever it likes with its own key: this is what keeps it from choosing the frames
  it sends (only those its model got right, say). A frame not picked at the expected share is refused unread
  (a flood of made-up frame ids costs a hash each). A lower share than expected is taken: the same hash under
  a lower threshold picks a subset of the expected sample, still blind to the answers. What the check cannot
  see: a device that drops some of its picked frames (uploads fewer); the record's `not_sent` is its own word.
Any other sample is refused with its name and the reason, never offered, never imported. So is an object that
is not a sample at all (not JSON, not the contract, a model or version that is not a name) or is over its bound
(`MAX_SAMPLE_RECORD_BYTES`, `MAX_SAMPLE_IMAGE_BYTES`: refused unread): anyone with the devices' account can
create one, and it must not stop the labelling of every other sample. Only a registry that cannot be read
stops the command.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import NamedTuple

from pydantic import ValidationError

from edgefleet.device.registry.base import RegistryReader
from edgefleet.device.spotcheck.config import DEFAULT_MAX_PER_DAY, DEFAULT_SHARE
from edgefleet.device.spotcheck.sampler import in_sample, share_threshold
from edgefleet.device.trust.device_identity import spot_sample_signature_problem
from edgefleet.kernel.contracts.spotcheck import (
    MAX_SAMPLE_IMAGE_BYTES,
    MAX_SAMPLE_RECORD_BYTES,
    SpotSample,
    frame_run_and_sequence,
    sample_keys,
)
from edgefleet.kernel.errors import VerificationError
from edgefleet.kernel.trust.signatures import key_id
from edgefleet.monitor.device_key_reader import FleetKeys, KeyRecordPolicy, load_device_key

REFUSED_FIX = ("a sample the folder's device did not sign is never labelled: check who holds the devices' "
               "service account (a compromised device can write under spotcheck/), and enrol the device "
               "(deploy-agent) if it has no key record")


DEFAULT_EXPECTED_SHARE = DEFAULT_SHARE
"""The share the operator expects by default: the agent's default `spot_check.share`."""
DEFAULT_MAX_PER_DEVICE = DEFAULT_MAX_PER_DAY
"""Samples of one device one listing offers (one import takes) at most: one day at the agent's default daily cap,
so a device flooding `spotcheck/` cannot drown the others' frames; the rest wait for the next listing."""
SHARE_TOLERANCE = 1e-12
"""A stated share equal to the expected one up to float rounding of the YAML and CLI texts is that share."""


class RefusedSample(NamedTuple):
    """A sample not taken: where its record is, and why."""

    where: str
    reason: str


def record_problem(sample: SpotSample, device_id: str, frame: str, keys: FleetKeys) -> str | None:
    """Why the record under `spotcheck/<device_id>/<frame>.json` is not the device's own (None: it is). Pure."""
    if (sample.device_id, sample.frame_id) != (device_id, frame):
        return (f"its record names {sample.device_id} {sample.frame_id}, not {device_id} {frame}: a sample speaks "
                "only for the folder and frame it is under")
    key = keys.keys.get(device_id)
    if key is None:
        why = "; ".join(refused.reason for refused in keys.refused)
        return f"device {device_id} has no key record the operator trusts in fleet/devices/" + (
            f" ({why})" if why else "")
    return spot_sample_signature_problem(key, sample)


def version_problem(sample: SpotSample, published: frozenset[str], registry: str) -> str | None:
    """Why the sample's model version is not one to label (None: `published` holds it). Pure."""
    if sample.model_version in published:
        return None
    return (f"model {sample.model} has no published version {sample.model_version} in {registry}: a sample of a "
            "version nobody released is never labelled")


def unpicked_problem(device_id: str, frame: str, share: float) -> str | None:
    """Why the sampler of `device_id` would not have picked `frame` at `share` (None: it would). Pure."""
    run, sequence = frame_run_and_sequence(frame)
    if in_sample(device_id, run, sequence, share_threshold(share)):
        return None
    return (f"frame {frame} is not picked by the sampler of device {device_id} at share {share:g} (the hash of "
            "device, run and sequence is above it): the device chose this frame, and a chosen sample biases the "
            "labelled accuracy")


def sampler_problem(sample: SpotSample, expected_share: float) -> str | None:
    """Why the sample is not one the device's sampler picked (None: it is): its stated share above
    `expected_share`, or its frame not picked at its stated share. Pure."""
    if sample.share > expected_share * (1 + SHARE_TOLERANCE):
        return (f"it states share {sample.share:g}, above the share {expected_share:g} the operator expects: at a "
                "higher share more frames look picked, so the device could choose among them (if the fleet's "
                f"agent configs set spot_check.share {sample.share:g}, pass --share {sample.share:g})")
    return unpicked_problem(sample.device_id, sample.frame_id, sample.share)


def over_cap_reason(cap: int) -> str:
    """Why a sample beyond the per-device cap of one listing or import is left out."""
    return (f"over --max-per-device {cap}: one listing offers (one import takes) at most {cap} samples of a device, "
            "so a flooding device cannot drown the others (the next listing offers the rest)")


def image_problem(sample: SpotSample, image: bytes | None) -> str | None:
    """Why `image` is not the frame the record signed (None: it is). Pure."""
    if image is None:
        return "its JPEG is missing"
    if hashlib.sha256(image).hexdigest() != sample.image_sha256:
        return "the JPEG does not match the hash its signed record holds"
    return None


class SampleReader:
    """Reads samples and takes only the signed ones; each device's key read once per reader (one command).

    Args:
        registry: the registry holding `spotcheck/` and `fleet/`.
        policy: the enrolment keys that sign device key records (and the operator's own revocations).
        expected_share: the share the fleet's agents sample (`spot_check.share`): a sample stating more, or of a
            frame the sampler does not pick, is refused (`sampler_problem`).
    """

    def __init__(self, registry: RegistryReader, policy: KeyRecordPolicy,
                 expected_share: float = DEFAULT_EXPECTED_SHARE) -> None:
        share_threshold(expected_share)  # a share outside (0, 1] is named here, before anything is read
        self.registry, self.policy, self.expected_share = registry, policy, expected_share
        self._keys: dict[str, FleetKeys] = {}
        self._published: dict[str, frozenset[str]] = {}

    def keys(self, device_id: str) -> FleetKeys:
        if device_id not in self._keys:
            self._keys[device_id] = load_device_key(self.registry, self.policy, device_id, frozenset())
        return self._keys[device_id]

    def key_id(self, device_id: str) -> str | None:
        """The id of the key the fleet trusts for `device_id` (the one its taken samples are signed by)."""
        key = self.keys(device_id).keys.get(device_id)
        return key_id(key) if key is not None else None

    def published(self, model: str) -> frozenset[str]:
        """The published versions of `model` (listed once per reader)."""
        if model not in self._published:
            self._published[model] = frozenset(self.registry.list_versions(model))
        return self._published[model]

    def read(self, device_id: str, frame: str) -> SpotSample | RefusedSample | None:
        """The device's signed sample of `frame`, a refusal naming it, or None when there is no such sample.

        Raises:
            EdgefleetError: the registry cannot be read (nothing is taken; run it again).
        """
        image_key, record_key = sample_keys(device_id, frame)
        where = self.registry.describe(record_key)
        unpicked = unpicked_problem(device_id, frame, self.expected_share)
        if unpicked is not None:  # refused unread: a flood of made-up frame ids costs a hash each
            return RefusedSample(where, unpicked)
        try:
            data = self.registry.read_object(record_key, MAX_SAMPLE_RECORD_BYTES)
        except VerificationError as error:  # over the bound, or not a plain object: refused unread
            return RefusedSample(where, error.message)
        if data is None:
            return None
        try:
            sample = SpotSample.model_validate_json(data)
        except ValidationError as error:
            return RefusedSample(where, f"not a spot check sample ({error.errors()[0]['msg']})")
        problem = (record_problem(sample, device_id, frame, self.keys(device_id))
                   or sampler_problem(sample, self.expected_share)
                   or version_problem(sample, self.published(sample.model), self.registry.uri))
        if problem is None:
            try:
                problem = image_problem(sample, self.registry.read_object(image_key, MAX_SAMPLE_IMAGE_BYTES))
            except VerificationError as error:
                problem = f"its JPEG is refused unread: {error.message}"
        return sample if problem is None else RefusedSample(where, problem)


def refusal_lines(refused: Iterable[RefusedSample]) -> list[str]:
    """`REFUSED <where>: <reason>` lines, one a refused sample."""
    return [f"REFUSED {where}: {reason}" for where, reason in refused]
