"""The release manifest and the channel pointer: what a release publishes and a device verifies.

The manifest names every file of a model version with its sha256 and size; it is signed (Ed25519) over
its exact bytes as stored (`manifest.json`), the signature stored beside it (`manifest.sig`, base64).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from edgefleet.kernel.contracts.distributions import SCORE_BUCKETS, Distributions
from edgefleet.kernel.contracts.layout import version_sort_key
from edgefleet.kernel.contracts.names import ChannelName, ModelName, ModelVersion
from edgefleet.kernel.contracts.rollout import RolloutStage

# Contract versions: writers write the newest; readers accept the newest and the one before it, and the
# reading side (the device agent for manifests) is upgraded first.
MANIFEST_SCHEMA_V1 = "edgefleet.manifest/1"
MANIFEST_SCHEMA = "edgefleet.manifest/2"
MANIFEST_SCHEMA_V3 = "edgefleet.manifest/3"
"""Schema 2 plus the `calibration` table. Readers accept 1, 2 and 3; writers write 3 only for a manifest with a
calibration table (agents that read only 1 and 2 refuse it: upgrade the agents first)."""
MANIFEST_SCHEMAS = (MANIFEST_SCHEMA_V1, MANIFEST_SCHEMA, MANIFEST_SCHEMA_V3)
CHANNEL_SCHEMA_V1 = "edgefleet.channel/1"
CHANNEL_SCHEMA_V2 = "edgefleet.channel/2"
CHANNEL_SCHEMA = "edgefleet.channel/3"
CHANNEL_SCHEMAS = (CHANNEL_SCHEMA_V1, CHANNEL_SCHEMA_V2, CHANNEL_SCHEMA)
SIGNED_CHANNEL_SCHEMAS = (CHANNEL_SCHEMA_V2, CHANNEL_SCHEMA)
CHANNEL_SIGNATURE_DOMAIN = CHANNEL_SCHEMA_V2
"""The first line of what a pointer signature covers, the same for schema 2 and 3 (the payload names the
schema): a schema 2 pointer signed before schema 3 existed verifies unchanged."""
MAX_POINTER_COUNTER = 2**53 - 1
"""The highest counter a channel pointer may carry. Counters are milliseconds since the epoch (or one above the
previous pointer's), so this leaves 285,000 years of headroom; it is the largest integer every JSON reader
keeps exactly. A pointer beyond it is not a valid pointer (a forgery, not a counter to count on from)."""

MAX_POINTER_VALIDITY_DAYS = 90
"""The longest a signed pointer may be valid: agents refuse longer ones (a stolen, far-dated pointer would
outlive every re-signing); pipelines refuse to sign longer ones."""
MAX_POINTER_VALIDITY = timedelta(days=MAX_POINTER_VALIDITY_DAYS)

Variant = Literal["edgetpu", "cpu"]
TensorDtype = Literal["uint8", "int8", "float32", "int32", "int64", "int16", "float16"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FileEntry(_Frozen):
    """One file of a model version."""

    name: str = Field(description="File name inside the version directory, e.g. model_cpu.tflite")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if "/" in value or "\\" in value or value in {"", ".", ".."}:
            raise ValueError(f"file name {value!r} must be a plain name inside the version directory")
        return value


class Quantization(_Frozen):
    """Affine quantization of a tensor: real = scale * (q - zero_point). scale 0 means not quantized."""

    scale: float = 0.0
    zero_point: int = 0


class TensorSpec(_Frozen):
    """Shape, dtype and quantization of a model input or output."""

    name: str = ""
    shape: tuple[int, ...]
    dtype: TensorDtype
    quantization: Quantization = Quantization()


class CpuOperation(_Frozen):
    """An operator the Edge TPU compiler left on the CPU, with the compiler's reason."""

    operator: str
    count: int = Field(ge=0)
    reason: str


class CompilerReport(_Frozen):
    """What `edgetpu_compiler` said about a model."""

    compiler_version: str | None = None
    operations_total: int = Field(ge=0)
    operations_on_tpu: int = Field(ge=0)
    operations_on_cpu: int = Field(ge=0)
    cpu_operations: tuple[CpuOperation, ...] = ()
    subgraphs: int = Field(default=1, ge=0)
    on_chip_memory_bytes: int = Field(default=0, ge=0)
    off_chip_memory_bytes: int = Field(default=0, ge=0)

    @property
    def tpu_fraction(self) -> float:
        """Fraction of operations mapped to the Edge TPU (0..1)."""
        return self.operations_on_tpu / self.operations_total if self.operations_total else 0.0


class Metrics(_Frozen):
    """Quality and size of a release, float model against its int8 twin."""

    float_accuracy: float | None = None
    int8_accuracy: float | None = None
    float_size_bytes: int | None = None
    int8_size_bytes: int | None = None
    cpu_latency_ms: float | None = None
    eval_samples: int | None = None


class GoldenOutput(_Frozen):
    """Expected raw output of the CPU model for one reference input.

    The reference input is regenerated on the device from `seed` and the model's input spec
    (`edgefleet.device.runtime.golden.reference_input`), so no input file needs to ship.
    """

    seed: int
    output: tuple[float, ...] = Field(description="First output tensor, flattened, raw (quantized) values")
    top1: int


class Reference(_Frozen):
    """(v2) What the int8 model does on the held-out split: the canary judge's reference for class mix and
    top-1 scores (the latency histogram is left empty: the release machine is not a device)."""

    split: str = Field(default="held-out", description="which images the distributions come from")
    samples: int = Field(ge=0)
    distributions: Distributions


class Calibration(_Frozen):
    """(v3) How often the int8 model was right on the held-out split, per top-1 score bucket (the telemetry's
    `SCORE_BUCKETS`): the monitor's label-free accuracy estimate (CBPE) weights a device's score histogram by
    it. Counts, not rates: the reader fits the table (`edgefleet.monitor.drift.accuracy.fit_counts`)."""

    split: str = Field(default="held-out", description="which images the counts come from")
    images: tuple[int, ...] = Field(min_length=SCORE_BUCKETS, max_length=SCORE_BUCKETS,
                                    description="held-out images whose top-1 score fell in each bucket")
    correct: tuple[int, ...] = Field(min_length=SCORE_BUCKETS, max_length=SCORE_BUCKETS,
                                     description="of those, the ones the int8 model answered right")

    @model_validator(mode="after")
    def _correct_within_images(self) -> Calibration:
        if any(not 0 <= self.correct[i] <= self.images[i] for i in range(SCORE_BUCKETS)):
            raise ValueError("calibration: every bucket needs 0 <= correct <= images")
        return self


class SigningInfo(_Frozen):
    """(v2) Which key signed the manifest, and whether it is a development key (agents may refuse those)."""

    key_id: str = Field(pattern=r"^[0-9a-f]{16,64}$", description="sha256 (hex) of the raw public key")
    development: bool = False


class Origin(_Frozen):
    """(v2) Where the model came from: trained by the flow, a Keras model given to it, or brought as .tflite."""

    kind: Literal["trained", "keras", "brought"] = "trained"
    dataset: str | None = Field(default=None, description="the dataset evaluated on; None: no evaluation")
    note: str = ""


class Manifest(_Frozen):
    """Everything a device needs to know about one immutable model version (schema 2, or 3 with a calibration
    table; 1 still read)."""

    schema_: Literal["edgefleet.manifest/1", "edgefleet.manifest/2", "edgefleet.manifest/3"] = Field(
        default=MANIFEST_SCHEMA, alias="schema")
    model: ModelName
    version: ModelVersion
    task: Literal["classification", "detection"] = "classification"
    created_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    source_commit: str | None = None
    files: tuple[FileEntry, ...]
    variants: dict[Variant, str] = Field(description="variant -> file name; 'cpu' always present")
    input: TensorSpec
    outputs: tuple[TensorSpec, ...]
    labels_file: str | None = "labels.txt"
    # the class ids the labels span, highest id + 1 (COCO's 80 labels: 90); releases before 2026-12-07 wrote the
    # number of labels, which is the same for labels without gaps in their ids
    label_count: int | None = None
    metrics: Metrics = Metrics()
    compiler: CompilerReport | None = None
    golden: tuple[GoldenOutput, ...] = ()
    golden_tolerance: float = Field(default=2.0, ge=0, description="max |diff| in raw output units")
    # --- schema 2 ---
    reference: Reference | None = None
    signing: SigningInfo | None = None
    origin: Origin | None = None
    # --- schema 3 ---
    calibration: Calibration | None = None

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _v2_fields_need_v2(self) -> Manifest:
        if self.schema_ == MANIFEST_SCHEMA_V1 and (self.reference or self.signing or self.origin):
            raise ValueError("reference, signing and origin need schema edgefleet.manifest/2")
        if self.calibration is not None and self.schema_ != MANIFEST_SCHEMA_V3:
            raise ValueError("calibration needs schema edgefleet.manifest/3")
        return self

    def with_calibration(self, calibration: Calibration) -> Manifest:
        """This manifest at schema 3 with `calibration` (validated again)."""
        return Manifest.model_validate({**self.model_dump(by_alias=True), "schema": MANIFEST_SCHEMA_V3,
                                        "calibration": calibration.model_dump()})

    @field_validator("variants")
    @classmethod
    def _cpu_variant_always(cls, value: dict[str, str]) -> dict[str, str]:
        if "cpu" not in value:
            raise ValueError("variants must include 'cpu': the CPU model always ships")
        return value

    def file(self, name: str) -> FileEntry:
        """Returns the entry of file `name`; KeyError if the manifest does not list it."""
        for entry in self.files:
            if entry.name == name:
                return entry
        raise KeyError(name)

    def to_json_bytes(self) -> bytes:
        """The canonical bytes written as manifest.json (what gets signed)."""
        return self.model_dump_json(by_alias=True, indent=2).encode() + b"\n"


class ChannelPointer(_Frozen):
    """`models/<model>/channels/<channel>.json`: which version a channel points at.

    Schema 2 (`edgefleet.channel/2`) is signed with the release key (`edgefleet.device.trust.pointers`): it adds a
    `counter` that only goes up, an expiry, a `downgrade` flag (a deliberate move to a lower version), the
    signing key's id and the signature (base64 of Ed25519 over `signed_bytes()`). Schema 1 (unsigned) is
    still read; a bare `ChannelPointer(...)` without the schema 2 fields is a schema 1 pointer.

    Schema 3 (`edgefleet.channel/3`) is schema 2 plus an optional `rollout` block
    (`edgefleet.kernel.contracts.rollout.RolloutStage`): a staged rollout of `version` to a share of the fleet,
    the others staying on the version it replaces, and optionally (`shadow_bp`, issue 25) a share running it as
    a shadow only. Signed the same way; writers write schema 3 only for a pointer with a rollout block, so a
    plain pointer stays readable by schema 2 agents.
    """

    schema_: Literal["edgefleet.channel/1", "edgefleet.channel/2", "edgefleet.channel/3"] = Field(
        default=CHANNEL_SCHEMA_V1, alias="schema"
    )
    model: ModelName
    channel: ChannelName
    version: ModelVersion
    manifest_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    updated_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    updated_by: str | None = Field(default=None, max_length=256)
    # --- schema 2 ---
    counter: int | None = Field(default=None, ge=1, le=MAX_POINTER_COUNTER)
    expires_at: AwareDatetime | None = Field(default=None, description="with a timezone (UTC as written)")
    downgrade: bool = False
    key_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{16,64}$")
    signature: str | None = Field(default=None, pattern=r"^[A-Za-z0-9+/]{86}==$")
    # --- schema 3 ---
    rollout: RolloutStage | None = None

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _fields_match_schema(self) -> ChannelPointer:
        v2_fields = {
            "counter": self.counter,
            "expires_at": self.expires_at,
            "key_id": self.key_id,
            "signature": self.signature,
        }
        if self.schema_ == CHANNEL_SCHEMA_V1:
            if any(value is not None for value in v2_fields.values()) or self.downgrade:
                raise ValueError(
                    "counter, expires_at, downgrade, key_id and signature need schema edgefleet.channel/2"
                )
        else:
            missing = sorted(name for name, value in v2_fields.items() if value is None)
            if missing:
                raise ValueError(f"a schema {self.schema_} pointer needs {', '.join(missing)}")
        if self.rollout is not None:
            self._check_rollout(self.rollout)
        return self

    def _check_rollout(self, rollout: RolloutStage) -> None:
        if self.schema_ != CHANNEL_SCHEMA:
            raise ValueError("a rollout block needs schema edgefleet.channel/3")
        if self.downgrade:
            raise ValueError("a staged rollout is never a downgrade: roll a fixed version forward instead")
        if version_sort_key(rollout.replaces) >= version_sort_key(self.version):
            raise ValueError(f"rollout {rollout.id} replaces {rollout.replaces} with {self.version}: a staged "
                             "rollout moves to a higher version")

    @property
    def signed(self) -> bool:
        """True for a schema 2 or 3 pointer (which carries a signature; check it with `verify_pointer`)."""
        return self.schema_ in SIGNED_CHANNEL_SCHEMAS

    def signed_bytes(self) -> bytes:
        """The exact bytes a schema 2/3 signature covers: a domain line, then canonical JSON of every field but
        the signature (sorted keys, no spaces), so a pointer re-serialised by any writer verifies the same. An
        absent rollout block is left out, so a schema 2 pointer's bytes are what they were before schema 3."""
        payload = self.model_dump(mode="json", by_alias=True, exclude=self._absent() | {"signature": True})
        return (
            CHANNEL_SIGNATURE_DOMAIN.encode()
            + b"\n"
            + json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
        )

    def to_json_bytes(self) -> bytes:
        exclude = self._absent()
        if not self.signed:
            exclude |= dict.fromkeys(("counter", "expires_at", "downgrade", "key_id", "signature"), True)
        return self.model_dump_json(by_alias=True, indent=2, exclude=exclude).encode() + b"\n"

    def _absent(self) -> dict[str, Any]:
        """Optional schema 3 parts left out when absent (the rollout block; its `shadow_bp`), so bytes written
        and signed without them are what they were before they existed."""
        if self.rollout is None:
            return {"rollout": True}
        return {"rollout": {"shadow_bp"}} if self.rollout.shadow_bp is None else {}
