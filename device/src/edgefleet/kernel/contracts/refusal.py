"""The refusal list: which versions of a model a device refused (`<root>/models/<model>/.refused.json`).

Written by the device store when pull mode or the agent's smoke test refuses a version (so it is not tried
again); read back by the store, by the rollout over SSH (a version refused before fails preflight; one refused
during the health gate is a `DeviceRefused`) and by `edgefleet-agent models`.

Refusal list schema 1 (the format since refusals exist, given a model of its own by issue 14): a JSON array of
objects `{version, manifest_sha256, reason, refused_at}`. Readers are tolerant: unknown fields are ignored and
fields added later must have defaults, so a newer writer never breaks an older reader and no revision is needed
for additions.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime

from pydantic import BaseModel, ConfigDict, TypeAdapter, field_serializer

REFUSAL_SCHEMA_VERSION = 1


class Refusal(BaseModel):
    """A version that was refused (failed verification or smoke test) and is not to be retried."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    version: str
    manifest_sha256: str
    reason: str
    refused_at: datetime

    @field_serializer("refused_at")
    def _iso(self, value: datetime) -> str:  # `+00:00`, not `Z`: Python 3.9's fromisoformat reads only this
        return value.isoformat()

    def matches(self, version: str, manifest_sha256: str | None = None) -> bool:
        """True for this version (and this exact manifest, when `manifest_sha256` is given)."""
        return self.version == version and manifest_sha256 in (None, self.manifest_sha256)


_LIST = TypeAdapter(tuple[Refusal, ...])


def parse_refusals(text: str | bytes) -> tuple[Refusal, ...]:
    """Reads a refusal list (empty text reads as no refusals).

    Raises:
        ValueError: not JSON, or not a list of refusals (pydantic's ValidationError is a ValueError).
    """
    if not text.strip():
        return ()
    return _LIST.validate_json(text)


def dump_refusals(refusals: Iterable[Refusal]) -> bytes:
    """The refusal list as written on the device (indented JSON and a final newline)."""
    payload = [refusal.model_dump(mode="json") for refusal in refusals]
    return json.dumps(payload, indent=2).encode() + b"\n"


def find_refusal(refusals: Sequence[Refusal], version: str, manifest_sha256: str | None = None) -> Refusal | None:
    """The refusal of `version` (and of this exact manifest, when given), or None."""
    return next((refusal for refusal in refusals if refusal.matches(version, manifest_sha256)), None)
