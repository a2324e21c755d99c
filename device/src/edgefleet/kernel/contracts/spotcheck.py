"""The labelled spot check (issue 25): the frames a device samples for labelling, and where they go.

A device whose agent config turns `spot_check` on sends a deterministic, unbiased sample of its frames to the
registry bucket, each as two objects created once (never replaced) under the device's own prefix:

    spotcheck/<device_id>/<frame_id>.jpg     the frame (JPEG)
    spotcheck/<device_id>/<frame_id>.json    `SpotSample` (`edgefleet.spotcheck/1`): the model's answer to it

The JSON is written after the JPEG, so a sample is complete once its JSON exists. A labeller labels the JPEGs;
`edgefleet spotcheck import` joins the labels with the samples and writes, per device, the labelled record
`fleet/spotcheck-labels/<device_id>.json` (`SpotLabels`, `edgefleet.spotcheck-labels/1`: operators only, the
devices' write grant stops at `spotcheck/`). `fleet status` shows the labelled accuracy beside the estimated
one. A new contract (version 1): no telemetry or status revision carries anything of it.

Each record is signed by the device's identity key (`signature`: Ed25519 over `SpotSample.signed_bytes`, the
record without it; the record holds the JPEG's SHA-256, so the signature covers the frame too). Every device
shares one service account, so IAM cannot keep a device out of another's folder: the operator's `pending` and
`import` take a sample only when the key registered for the folder's device (`fleet/devices/<id>.json`, not
revoked) signed it and the record names that device and frame.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from edgefleet.kernel.contracts.devicekey import KEY_ID_PATTERN
from edgefleet.kernel.contracts.layout import check_name
from edgefleet.kernel.contracts.names import DeviceId, ModelName, ModelVersion

SPOTCHECK_PREFIX = "spotcheck"
"""Registry prefix of the sampled frames; a device creates objects only under `spotcheck/<its id>/`."""
SPOTCHECK_LABELS_PREFIX = "fleet/spotcheck-labels"
"""Registry prefix of the labelled records (written by the operator's `edgefleet spotcheck import`)."""
SAMPLE_SCHEMA = "edgefleet.spotcheck/1"
LABELS_SCHEMA = "edgefleet.spotcheck-labels/1"
IMAGE_SUFFIX = ".jpg"
RECORD_SUFFIX = ".json"
MAX_SAMPLE_RECORD_BYTES = 64 * 1024
"""A sample's JSON is a few hundred bytes; a bigger one is refused unread."""
MAX_SAMPLE_IMAGE_BYTES = 16 * 1024 * 1024
"""A sample's JPEG (a camera frame at quality <= 95); a bigger one is refused unread."""
SAMPLE_SIGNATURE_DOMAIN = b"edgefleet.spotcheck-signature/1\n"
SIGNATURE_PATTERN = r"^[A-Za-z0-9+/]{86}==$"  # base64 of the 64-byte Ed25519 signature

_FRAME_ID = re.compile(r"[0-9]{8}T[0-9]{6}Z-[0-9]{12}")  # fullmatch: <run started, UTC>-<frame sequence>
FRAME_ID_PATTERN = _FRAME_ID.pattern


def frame_id(run_started: datetime, sequence: int) -> str:
    """`<run start, UTC, to the second>-<sequence, 12 digits>`: unique per device (one agent per root, runs a
    second or more apart), and sorting as the frames were taken."""
    return f"{run_started.strftime('%Y%m%dT%H%M%SZ')}-{sequence:012d}"


def check_frame_id(value: str) -> str:
    """`value` when it is a frame id (`frame_id`), else ValueError naming the expected shape."""
    if not _FRAME_ID.fullmatch(value):
        raise ValueError(f"frame id {value[:64]!r} is not <YYYYMMDDTHHMMSSZ>-<12 digits>")
    return value


def frame_run_and_sequence(frame: str) -> tuple[str, int]:
    """(run, sequence) of a frame id: what the device's sampler hashed (with the device id) to pick the frame."""
    run, sequence = check_frame_id(frame).split("-")
    return run, int(sequence)


def device_prefix(device_id: str) -> str:
    """`spotcheck/<device_id>/`: the one place the device's samples go (a checked device id)."""
    return f"{SPOTCHECK_PREFIX}/{check_name('device id', device_id)}/"


def sample_keys(device_id: str, frame: str) -> tuple[str, str]:
    """(JPEG key, JSON key) of one sample, both under `device_prefix(device_id)`."""
    base = device_prefix(device_id) + check_frame_id(frame)
    return base + IMAGE_SUFFIX, base + RECORD_SUFFIX


def labels_key(device_id: str) -> str:
    """`fleet/spotcheck-labels/<device_id>.json`."""
    return f"{SPOTCHECK_LABELS_PREFIX}/{check_name('device id', device_id)}.json"


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SpotSample(_Record):
    """One sampled frame's record: the model's answer, and what the device's sampler had to leave out."""

    schema_: Literal["edgefleet.spotcheck/1"] = Field(default=SAMPLE_SCHEMA, alias="schema")
    device_id: DeviceId
    frame_id: str = Field(pattern=f"^{FRAME_ID_PATTERN}$")
    captured_at: AwareDatetime
    model: ModelName
    model_version: ModelVersion
    """Names as the registry's layout allows them: a sample's model and version are shown to the operator and
    looked up in the registry (`models/<model>/<version>/`), so nothing else (a path, control characters)."""
    answer_id: int | None = Field(default=None, ge=0, description="top-1 class id; None: no result")
    answer_label: str = Field(default="", max_length=200, description="its label ('' without labels)")
    answer_score: float = Field(default=0.0, ge=0, le=1)
    share: float = Field(gt=0, le=1, description="the sampler's share when this frame was taken: the operator "
                         "recomputes the sampler's choice of (device_id, frame_id) under it and refuses a share "
                         "above the fleet's")
    image_sha256: str = Field(pattern="^[0-9a-f]{64}$")
    not_sent: int = Field(default=0, ge=0, description="sampled frames left out so far this run (the hourly or "
                                                       "daily cap, a full queue, the outbox's oldest dropped)")
    signature: str | None = Field(default=None, pattern=SIGNATURE_PATTERN, description="base64 Ed25519 of "
                                  "the record without it, by the device's identity key (`device/trust/"
                                  "device_identity.sign_spot_sample`); covers the JPEG through image_sha256")

    def signed_bytes(self) -> bytes:
        """What the device's signature covers: a domain line, then canonical JSON of the record without it."""
        payload = self.model_dump(mode="json", by_alias=True, exclude={"signature"})
        return SAMPLE_SIGNATURE_DOMAIN + json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


class LabelledSample(_Record):
    """A sample with the labeller's label: `correct` when it names the model's top-1 answer. `model` and
    `model_version` are the sample's (versions are per model: birds 1.0.0 is not cats 1.0.0)."""

    frame_id: str = Field(pattern=f"^{FRAME_ID_PATTERN}$")
    model: ModelName
    model_version: ModelVersion
    answer_id: int | None = None
    answer_label: str = ""
    answer_score: float = Field(ge=0, le=1)
    label: str = Field(min_length=1, max_length=200)
    correct: bool
    key_id: str | None = Field(default=None, pattern=KEY_ID_PATTERN, description="the device key that signed the "
                               "sample (`edgefleet spotcheck import` records it): once that key is revoked the "
                               "frame no longer counts; None (a record imported before the field) never counts")


class SpotLabels(_Record):
    """Every labelled sample of one device (`fleet/spotcheck-labels/<device_id>.json`)."""

    schema_: Literal["edgefleet.spotcheck-labels/1"] = Field(default=LABELS_SCHEMA, alias="schema")
    device_id: DeviceId
    updated_at: AwareDatetime
    samples: tuple[LabelledSample, ...] = ()


def answer_matches(label: str, answer_id: int | None, answer_label: str) -> bool:
    """Whether the labeller's `label` names the model's top-1 answer (its label, or its class id)."""
    wanted = label.strip()
    return bool(wanted) and (wanted == answer_label or (answer_id is not None and wanted == str(answer_id)))
