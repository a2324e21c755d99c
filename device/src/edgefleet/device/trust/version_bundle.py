"""Signed model version bundles: read and verify a `models/<model>/<version>/` directory.

A version directory holds the model files (`model_cpu.tflite`, optionally `model_edgetpu.tflite`,
`labels.txt`, ...), `manifest.json` naming every one of them with its sha256 and size, and `manifest.sig`,
the base64 Ed25519 signature over the exact bytes of `manifest.json`. The same directory is what the release
pipeline publishes, what the registry stores and what a device installs.

Checking one (device, registry CLI): `verify_version_dir(version_dir, public_key)` checks the signature
first, then that every listed file has its size and sha256, and that no file is unlisted. Building and
signing one is the release pipeline's job: `edgefleet.flows.release.bundle` (never loaded by the agent).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import NamedTuple, cast

from pydantic import ValidationError

from edgefleet.kernel.contracts.layout import (
    MANIFEST_FILE,
    SIGNATURE_FILE,
)
from edgefleet.kernel.contracts.manifest import (
    Manifest,
)
from edgefleet.kernel.errors import VerificationError
from edgefleet.kernel.fsutil import read_regular
from edgefleet.kernel.trust.release_keyring import KeyringLike, UnknownKeyError, resolve_keyring, verify_by_key_id
from edgefleet.kernel.trust.signatures import KeyedSignature, decode_signatures

PublicKeyLike = KeyringLike  # what every caller passes: a keyring, one key, or a key file / keyring directory

_KEY_ID = re.compile(r"[0-9a-f]{16,64}")
HASH_CHUNK_BYTES = 1 << 20
SIGNED_FILES = frozenset({MANIFEST_FILE, SIGNATURE_FILE})
MAX_MANIFEST_BYTES = 8 * 1024 * 1024
"""A manifest larger than this is refused unread (real ones are kilobytes; golden outputs included)."""
MAX_SIGNATURE_BYTES = 1024

REFETCH_FIX = (
    "do not use this version: download or install it again from the registry; if the file was "
    "changed on purpose, build and sign a new version"
)


class SignedManifest(NamedTuple):
    """A manifest with the exact bytes it was signed over and its raw signature."""

    manifest: Manifest
    raw: bytes
    """The bytes of `manifest.json` as stored (what the signature covers)."""
    signature: bytes | tuple[KeyedSignature, ...]
    """The raw 64-byte Ed25519 signature, or the signatures of `manifest.sig` with their key ids (decoded)."""

    @property
    def manifest_sha256(self) -> str:
        """sha256 of `manifest.json`: what a channel pointer names."""
        return hashlib.sha256(self.raw).hexdigest()


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def version_files(version_dir: str | os.PathLike[str]) -> list[str]:
    """Names of the files in a version directory other than `manifest.json` / `manifest.sig`, sorted."""
    return sorted(
        entry.name
        for entry in os.scandir(version_dir)
        if entry.name not in SIGNED_FILES and not entry.is_dir(follow_symlinks=False)
    )


def parse_manifest(raw: bytes, *, source: str) -> Manifest:
    """Parses `manifest.json` bytes.

    Raises:
        VerificationError: the bytes are not a valid manifest (the message names `source`).
    """
    try:
        return Manifest.model_validate_json(raw)
    except ValidationError as error:
        raise VerificationError(
            f"{source} is not a valid edgefleet manifest: {error.errors()[0]['msg']} "
            f"(at {'.'.join(str(part) for part in error.errors()[0]['loc']) or 'top level'})",
            "it was written by an incompatible or broken release tool: rebuild and re-publish the version",
        ) from error


def verify_manifest_bytes(
    raw: bytes, signature: bytes | tuple[KeyedSignature, ...], public_key: PublicKeyLike, *, source: str
) -> Manifest:
    """Checks the signature over `manifest.json` bytes, then parses them.

    Each signature is checked with the keyring's key its key id names (a bare signature: the key the manifest's
    `signing.key_id` names, or every key for a manifest older than key ids); one that verifies is enough.

    Args:
        raw: the exact bytes of `manifest.json`.
        signature: the raw signature, or `manifest.sig`'s signatures
        (`edgefleet.kernel.trust.signatures.decode_signatures`). public_key: the release keyring, one public key, or a
        key file / keyring directory. source: where the manifest came from, for messages (a path or a registry URI).

    Raises:
        UnknownKeyError: signed only by keys the keyring does not hold (not yet added, or retired).
        VerificationError: a known key's signature does not verify (altered manifest), or not a manifest.
    """
    check_manifest_signatures(raw, signature, public_key, what=f"manifest {source}")
    manifest = parse_manifest(raw, source=source)
    check_manifest_consistency(manifest, source)
    return manifest


def check_manifest_signatures(raw: bytes, signature: bytes | tuple[KeyedSignature, ...], public_key: PublicKeyLike,
                              *, what: str) -> str:
    """The short id of the keyring key that verified one of the manifest's signatures (see
    `verify_manifest_bytes`)."""
    ring = resolve_keyring(public_key)
    signatures = (KeyedSignature(None, signature),) if isinstance(signature, bytes) else signature
    named = _signing_key_id(raw)
    unknown: UnknownKeyError | None = None
    failed: VerificationError | None = None
    for keyed in signatures:
        try:
            return verify_by_key_id(ring, raw, keyed.signature, key_id=keyed.key_id or named, what=what)
        except UnknownKeyError as error:
            unknown = unknown or error
        except VerificationError as error:
            failed = failed or error
    raise failed or unknown or VerificationError(f"{what} has no signature", REFETCH_FIX)


def _signing_key_id(raw: bytes) -> str | None:
    """`signing.key_id` of manifest bytes not verified yet: only which key to check them with."""
    try:
        document: object = json.loads(raw)
    except ValueError:
        return None
    key_id = _member(_member(document, "signing"), "key_id")
    return key_id if isinstance(key_id, str) and _KEY_ID.fullmatch(key_id) else None


def _member(document: object, key: str) -> object:
    """`document[key]` when `document` is a JSON object, else None."""
    if not isinstance(document, dict):
        return None
    return cast("dict[object, object]", document).get(key)  # a JSON object: the narrowing leaves its types unknown


def read_signed_manifest(version_dir: str | os.PathLike[str]) -> SignedManifest:
    """Reads `manifest.json` and `manifest.sig` of a version directory WITHOUT checking the signature.

    Raises:
        VerificationError: a file is missing, the signature file is malformed or the manifest invalid.
    """
    version_dir = Path(version_dir)
    raw, signature = _read_signed_files(version_dir)
    return SignedManifest(parse_manifest(raw, source=str(version_dir / MANIFEST_FILE)), raw, signature)


def check_manifest_consistency(manifest: Manifest, source: str) -> None:
    """Checks that the files the manifest refers to (variants, labels) are listed in it.

    Raises:
        VerificationError: naming the missing file.
    """
    listed = {entry.name for entry in manifest.files}
    referenced: dict[str, str] = {**manifest.variants}
    if manifest.labels_file is not None:
        referenced["labels"] = manifest.labels_file
    for role, name in referenced.items():
        if name not in listed:
            raise VerificationError(
                f"manifest of {source} names {name} as its {role} file but does not list it",
                "rebuild the manifest from the complete version directory",
            )
    names = [entry.name for entry in manifest.files]
    if len(set(names)) != len(names) or listed & SIGNED_FILES:
        raise VerificationError(
            f"manifest of {source} lists a file twice or lists its own manifest files",
            "rebuild the manifest with edgefleet.flows.release.bundle.build_manifest",
        )


def check_version_files(version_dir: str | os.PathLike[str], manifest: Manifest) -> None:
    """Checks every listed file's size and sha256, and that the directory has no unlisted file.

    Raises:
        VerificationError: naming the first file that is missing, unlisted, not a regular file, or differs.
    """
    version_dir = Path(version_dir)
    listed = {entry.name for entry in manifest.files}
    folders = sorted(entry.name for entry in os.scandir(version_dir) if entry.is_dir(follow_symlinks=False))
    if folders:
        raise VerificationError(
            f"{version_dir} holds sub-folder(s) {', '.join(folders)} that its manifest does not list",
            "a version directory holds exactly the files its manifest lists: remove the folder, or "
            "download/install the version again",
        )
    for name in version_files(version_dir):
        if name not in listed:
            raise VerificationError(
                f"file {name} in {version_dir} is not listed in its manifest",
                "a version directory holds exactly the files its manifest lists: remove the extra file, or "
                "download/install the version again",
            )
    for entry in manifest.files:
        path = version_dir / entry.name
        try:
            stat = path.lstat()
        except FileNotFoundError:
            raise VerificationError(
                f"file {entry.name} listed in the manifest is missing from {version_dir}", REFETCH_FIX
            ) from None
        if not path.is_file() or path.is_symlink():
            raise VerificationError(
                f"{path} is not a regular file", "version files must be plain files: " + REFETCH_FIX
            )
        if stat.st_size != entry.size:
            raise VerificationError(
                f"file {entry.name} in {version_dir} has {stat.st_size} bytes, its manifest says "
                f"{entry.size}: "
                "it was changed or truncated after signing",
                REFETCH_FIX,
            )
        actual = sha256_file(path)
        if actual != entry.sha256:
            raise VerificationError(
                f"file {entry.name} in {version_dir} does not match its manifest (sha256 {actual[:16]}..., "
                f"manifest says {entry.sha256[:16]}...): it was changed after signing",
                REFETCH_FIX,
            )


def verify_version_dir(
    version_dir: str | os.PathLike[str],
    public_key: PublicKeyLike,
    *,
    model: str | None = None,
    version: str | None = None,
    refuse_development: bool = False,
) -> Manifest:
    """Verifies a version directory: the manifest signature first, then every file.

    Args:
        version_dir: the directory (`.../<model>/<version>/`).
        public_key: the release public key or its file (named in errors).
        model, version: when given, the manifest must be for this model / version.
        refuse_development: refuse a version signed with a development key (`refuse_development_signed`).

    Returns:
        The verified manifest.

    Raises:
        VerificationError: naming the file that failed and what to do: a tampered or truncated file, an
            unlisted file, an altered manifest or a wrong public key (naming the key file to check).
    """
    version_dir = Path(version_dir)
    if not version_dir.is_dir():
        raise VerificationError(
            f"version directory {version_dir} does not exist",
            "give the directory that holds manifest.json and the model files",
        )
    raw, signature = _read_signed_files(version_dir)
    manifest = verify_manifest_bytes(raw, signature, public_key, source=str(version_dir / MANIFEST_FILE))
    if model is not None and manifest.model != model or version is not None and manifest.version != version:
        raise VerificationError(
            f"{version_dir} holds {manifest.model} {manifest.version}, expected {model or manifest.model} "
            f"{version or manifest.version}",
            "the version was stored under the wrong name: install or publish it under its manifest's name",
        )
    check_version_files(version_dir, manifest)
    if refuse_development:
        refuse_development_signed(manifest, str(version_dir))
    return manifest


def refuse_development_signed(manifest: Manifest, source: str, *, by: str = "this device") -> None:
    """Refuses a manifest that says it was signed with a development key (agents set to refuse them; `by`: who
    refuses, for the message).

    Raises:
        VerificationError: `manifest.signing.development` is set.
    """
    if manifest.signing is not None and manifest.signing.development:
        raise VerificationError(
            f"{source} ({manifest.model} {manifest.version}) is signed with a DEVELOPMENT key "
            f"(key id {manifest.signing.key_id}) and {by} refuses development-signed models",
            "release it with the production signing key (signing.secret_block or signing.key_file)",
        )


def _read_signed_files(version_dir: Path) -> tuple[bytes, tuple[KeyedSignature, ...]]:
    contents: list[bytes] = []
    for name, max_bytes in ((MANIFEST_FILE, MAX_MANIFEST_BYTES), (SIGNATURE_FILE, MAX_SIGNATURE_BYTES)):
        try:
            contents.append(read_regular(version_dir / name, max_bytes=max_bytes, error_type=VerificationError,
                                         fix="a version directory holds plain files as the release pipeline "
                                         "wrote them: " + REFETCH_FIX))
        except FileNotFoundError:
            raise VerificationError(
                f"{version_dir} has no {name}",
                "a version directory needs manifest.json and manifest.sig as written by the release pipeline "
                "(edgefleet.flows.release.bundle.write_signed_version): download or build the version again",
            ) from None
    raw, signature_text = contents
    return raw, decode_signatures(signature_text, source=str(version_dir / SIGNATURE_FILE))
