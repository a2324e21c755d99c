"""Checking an agent release's `agent-manifest.sig` with the release keyring (the updater, `edgefleet keys`).

The file has the two revisions of a model's `manifest.sig` (`edgefleet.kernel.trust.signatures.decode_signatures`):
revision 1, one bare base64 signature (what `publish_agent` writes; its key is the manifest's `signing_key_id`),
and revision 2, one `<key id> <base64>` line per key (what `edgefleet keys resign` writes: the manifest keeps its
bytes, so the sha256 the agent pointer names does not change). Each signature is over the agent domain line and
the manifest's bytes (`manifest_signed_bytes`); one that the keyring's key verifies is enough.
"""

from __future__ import annotations

import json
import re
from typing import cast

from edgefleet.kernel.contracts.agent_release import manifest_signed_bytes
from edgefleet.kernel.errors import VerificationError
from edgefleet.kernel.trust.release_keyring import KeyringLike, UnknownKeyError, resolve_keyring, verify_by_key_id
from edgefleet.kernel.trust.signatures import KeyedSignature, decode_signatures

_KEY_ID = re.compile(r"[0-9a-f]{16,64}")


def named_signing_key(manifest: bytes) -> str | None:
    """`signing_key_id` of agent manifest bytes not verified yet: only which key to check a bare signature with."""
    try:
        document: object = json.loads(manifest)
    except ValueError:
        return None
    # A JSON object: the isinstance narrowing leaves its key and value types unknown.
    named = cast("dict[object, object]", document).get("signing_key_id") if isinstance(document, dict) else None
    return named if isinstance(named, str) and _KEY_ID.fullmatch(named) else None


def keyed_agent_signatures(manifest: bytes, signature_file: bytes, *, source: str) -> tuple[KeyedSignature, ...]:
    """The signatures of an `agent-manifest.sig` (either revision), a bare one named by the manifest's key id.

    Raises:
        VerificationError: the file is neither revision.
    """
    named = named_signing_key(manifest)
    return tuple(KeyedSignature(one.key_id or named, one.signature)
                 for one in decode_signatures(signature_file, source=source))


def check_agent_signatures(ring: KeyringLike, manifest: bytes, signatures: tuple[KeyedSignature, ...], *,
                           what: str) -> str:
    """The short id of the keyring key that verified one of the signatures.

    Raises:
        UnknownKeyError: signed only by keys the keyring does not hold (not yet added, or retired): wait.
        VerificationError: a signature naming a held key does not verify (altered or forged), or none at all.
    """
    keyring = resolve_keyring(ring)
    signed = manifest_signed_bytes(manifest)
    unknown: UnknownKeyError | None = None
    failed: VerificationError | None = None
    for keyed in signatures:
        try:
            return verify_by_key_id(keyring, signed, keyed.signature, key_id=keyed.key_id, what=what)
        except UnknownKeyError as error:
            unknown = unknown or error
        except VerificationError as error:
            failed = failed or error
    raise failed or unknown or VerificationError(f"{what} has no signature",
                                                 "re-publish the agent release, or re-sign it (edgefleet keys resign)")
