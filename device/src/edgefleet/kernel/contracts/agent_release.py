"""The agent's own release: its wheel and hashed locks in the registry, signed by the release key, moved by a
signed channel pointer the way models are.

Registry layout (its own prefix, never under `models/`, so no model name can collide with it):

    agent/<version>/agent-manifest.json   edgefleet.agent-manifest/1: version, the wheel and every lock, sha256+size
    agent/<version>/agent-manifest.sig    Ed25519 over AGENT_MANIFEST_DOMAIN + the bytes, either revision of
                                          `manifest.sig`: 1, one bare base64 line (what publishing writes; key:
                                          the manifest's signing_key_id); 2, one `<key id> <base64>` line per
                                          release key (what `edgefleet keys resign` writes)
    agent/<version>/<wheel>               edgefleet-<version>-py3-none-any.whl
    agent/<version>/device-py<X.Y>-<arch>.txt   the hashed locks (`pip --require-hashes`), one per Python and CPU
    agent/channels/<channel>.json         a signed ChannelPointer (edgefleet.channel/2) with model AGENT_POINTER_MODEL

The manifest signature has its own domain line, so a model manifest's signature never verifies as an agent
manifest (and the pointer names the agent manifest's sha256, which no model manifest has). Everything here is
pure.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgefleet.kernel.contracts.layout import CHANNELS_DIR, check_name, check_version
from edgefleet.kernel.contracts.manifest import FileEntry
from edgefleet.kernel.contracts.names import ModelVersion

AGENT_PREFIX = "agent"
AGENT_MANIFEST_FILE = "agent-manifest.json"
AGENT_SIGNATURE_FILE = "agent-manifest.sig"
AGENT_MANIFEST_SCHEMA = "edgefleet.agent-manifest/1"
AGENT_MANIFEST_DOMAIN = b"edgefleet.agent-manifest/1\n"
AGENT_POINTER_MODEL = "edgefleet-agent"
"""The `model` an agent channel pointer names (its key is `agent/channels/<channel>.json`)."""
MAX_AGENT_MANIFEST_BYTES = 64 * 1024
MAX_AGENT_FILE_BYTES = 64 * 1024 * 1024
"""The largest wheel or lock a device downloads (the wheel is about 1 MB)."""
LOCK_EXTRA = "device"
_WHEEL = re.compile(r"edgefleet-[0-9A-Za-z.+_]{1,64}-py3-none-any\.whl")


class AgentManifest(BaseModel):
    """What one agent release is: the wheel and the locks, each with its sha256 and size."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    schema_: Literal["edgefleet.agent-manifest/1"] = Field(default=AGENT_MANIFEST_SCHEMA, alias="schema")
    version: ModelVersion
    created_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    source_commit: str | None = None
    wheel: FileEntry
    locks: tuple[FileEntry, ...] = Field(description="device-py<X.Y>-<arch>.txt, hashed")
    signing_key_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{16,64}$")

    @model_validator(mode="after")
    def _names(self) -> AgentManifest:
        if not _WHEEL.fullmatch(self.wheel.name):
            raise ValueError(f"the wheel of agent {self.version} must be edgefleet-<version>-py3-none-any.whl, "
                             f"not {self.wheel.name}")
        names = [entry.name for entry in self.locks]
        if len(set(names)) != len(names) or any(not name.startswith(f"{LOCK_EXTRA}-py") for name in names):
            raise ValueError("locks must be distinct device-py<X.Y>-<arch>.txt files")
        return self

    def lock_for(self, python: str, arch: str) -> FileEntry | None:
        name = lock_name(python, arch)
        return next((entry for entry in self.locks if entry.name == name), None)

    def to_json_bytes(self) -> bytes:
        return json.dumps(self.model_dump(mode="json", by_alias=True), indent=2, sort_keys=True).encode() + b"\n"


def lock_name(python: str, arch: str) -> str:
    """`device-py3.11-aarch64.txt` (the same names as flows/src/edgefleet/flows/locks/)."""
    return f"{LOCK_EXTRA}-py{python}-{arch}.txt"


def agent_version_prefix(version: str) -> str:
    return f"{AGENT_PREFIX}/{check_version(version)}"


def agent_file_key(version: str, name: str) -> str:
    return f"{agent_version_prefix(version)}/{name}"


def agent_channel_key(channel: str) -> str:
    return f"{AGENT_PREFIX}/{CHANNELS_DIR}/{check_name('channel', channel)}.json"


def manifest_signed_bytes(manifest_bytes: bytes) -> bytes:
    """What the release key signs for an agent release: a domain line, then the manifest's exact bytes."""
    return AGENT_MANIFEST_DOMAIN + manifest_bytes


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
