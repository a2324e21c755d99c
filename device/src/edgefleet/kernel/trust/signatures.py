"""Ed25519 keys and signatures for release manifests.

A release is signed over the exact bytes of its `manifest.json`; the signature is stored beside it in
`manifest.sig` as base64 text. Devices hold only the public key.

Key files:
    private key: PKCS#8 PEM, written with mode 0600 (optionally encrypted with a passphrase).
    public key: SubjectPublicKeyInfo PEM, or the raw 32-byte key in base64 on one line
        (both are accepted by `load_public_key`).

Example:
    >>> private_key, public_key = generate_keypair()
    >>> signature = sign(private_key, b"manifest bytes")
    >>> verify(public_key, b"manifest bytes", signature)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, NamedTuple, Union

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edgefleet.kernel.errors import VerificationError
from edgefleet.kernel.fsutil import atomic_write_bytes

PRIVATE_KEY_MODE = 0o600
ED25519_KEY_BYTES = 32
ED25519_SIGNATURE_BYTES = 64
KEY_ID_HEX_CHARS = 16

PublicKeyLike = Union[Ed25519PublicKey, str, os.PathLike[str]]  # a runtime alias: Python 3.9 has no `X | Y`
"""A public key object, or the path of a public key file (which then gets named in errors)."""


def generate_keypair() -> tuple[Ed25519PrivateKey, Ed25519PublicKey]:
    """Returns a new Ed25519 (private key, public key) pair."""
    private_key = Ed25519PrivateKey.generate()
    return private_key, private_key.public_key()


def public_key_raw(public_key: Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of a public key."""
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short fingerprint of a public key (hex of its sha256), to name keys in messages."""
    return hashlib.sha256(public_key_raw(public_key)).hexdigest()[:KEY_ID_HEX_CHARS]


def save_private_key(
    private_key: Ed25519PrivateKey, path: str | os.PathLike[str], *, passphrase: bytes | None = None
) -> Path:
    """Writes a private key as PKCS#8 PEM readable by its owner only (mode 0600).

    The file is created with mode 0600 from the start (never briefly world-readable) and replaced
    atomically when it already exists.

    Args:
        private_key: the key to save.
        path: destination file; parent directories are created.
        passphrase: encrypts the PEM when given.

    Returns:
        The path written.
    """
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    pem = private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    return _write_file(Path(path), pem, PRIVATE_KEY_MODE)


def save_public_key(
    public_key: Ed25519PublicKey, path: str | os.PathLike[str], *, encoding: Literal["pem", "base64"] = "pem"
) -> Path:
    """Writes a public key as PEM (default) or as the raw key in base64 on one line.

    Returns:
        The path written.
    """
    if encoding == "pem":
        data = public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    else:
        data = base64.b64encode(public_key_raw(public_key)) + b"\n"
    return _write_file(Path(path), data, 0o644)


def load_private_key(path: str | os.PathLike[str], *, passphrase: bytes | None = None) -> Ed25519PrivateKey:
    """Reads an Ed25519 private key from a PEM file.

    Raises:
        VerificationError: the file is missing, unreadable, accessible by group or others, encrypted without a
            passphrase, or not an Ed25519 private key.
    """
    path = Path(path)
    data = _read_key_file(path, "private")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise VerificationError(
            f"private key file {path} can be read or written by group or others (mode {mode:o})",
            f"chmod 600 {path}; if others could read it, consider the key exposed and replace it",
        )
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except (ValueError, TypeError) as error:
        raise VerificationError(
            f"private key file {path} cannot be read as a PEM private key ({error})",
            "point at the release signing key (Ed25519, PKCS#8 PEM) and give its passphrase if it is "
            "encrypted",
        ) from error
    if not isinstance(key, Ed25519PrivateKey):
        raise VerificationError(
            f"private key file {path} holds a {type(key).__name__}, not an Ed25519 key",
            "release manifests are signed with Ed25519: generate an Ed25519 key pair",
        )
    return key


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """Reads an Ed25519 public key from a PEM file or a file holding the raw key in base64.

    Raises:
        VerificationError: the file is missing, unreadable or not an Ed25519 public key.
    """
    path = Path(path)
    data = _read_key_file(path, "public")
    return public_key_from_bytes(data, source=str(path))


def public_key_from_bytes(data: bytes, *, source: str = "public key") -> Ed25519PublicKey:
    """Parses a public key given as PEM or as base64 of the raw 32 bytes.

    Args:
        data: the key file's content.
        source: what to call the key in errors (a file name).
    """
    text = data.strip()
    if text.startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text)
        except ValueError as error:
            raise _bad_public_key(source, str(error)) from error
        if not isinstance(key, Ed25519PublicKey):
            raise _bad_public_key(source, f"it holds a {type(key).__name__}, not an Ed25519 key")
        return key
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise _bad_public_key(source, "it is neither PEM nor base64") from error
    if len(raw) != ED25519_KEY_BYTES:
        raise _bad_public_key(
            source, f"base64 decodes to {len(raw)} bytes, an Ed25519 key has {ED25519_KEY_BYTES}"
        )
    return Ed25519PublicKey.from_public_bytes(raw)


def resolve_public_key(public_key: PublicKeyLike) -> tuple[Ed25519PublicKey, str]:
    """Returns (key, description) for a key object or key file path; the description names the file."""
    if isinstance(public_key, Ed25519PublicKey):
        return public_key, f"public key {key_id(public_key)}"
    key = load_public_key(public_key)
    return key, f"public key file {os.fspath(public_key)} (key id {key_id(key)})"


def sign(private_key: Ed25519PrivateKey, data: bytes) -> bytes:
    """Returns the 64-byte Ed25519 signature of `data`."""
    return private_key.sign(data)


def verify(public_key: PublicKeyLike, data: bytes, signature: bytes, *, what: str = "data") -> None:
    """Checks an Ed25519 signature.

    Args:
        public_key: the key object or the path of its file.
        data: the signed bytes.
        signature: the raw 64-byte signature.
        what: what `data` is, for the error message (e.g. "manifest.json in /models/x/1.0.0").

    Raises:
        VerificationError: the signature does not match; the message names `what` and the key.
    """
    key, key_description = resolve_public_key(public_key)
    try:
        key.verify(signature, data)
    except InvalidSignature as error:
        raise VerificationError(
            f"signature check failed: {what} is not signed by {key_description}",
            f"check that {key_description} is the release public key matching the signing key; "
            "if it is, the signed content was altered after signing: do not use it, re-download or "
            "re-publish it",
        ) from error


def encode_signature(signature: bytes) -> bytes:
    """The `manifest.sig` file content for a raw signature: base64 and a newline."""
    return base64.b64encode(signature) + b"\n"


def decode_signature(data: bytes, *, source: str = "manifest.sig") -> bytes:
    """Decodes a `manifest.sig` file's content to the raw 64-byte signature.

    Raises:
        VerificationError: the content is not base64 of 64 bytes.
    """
    try:
        signature = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError) as error:
        raise VerificationError(
            f"{source} is not base64 text",
            "the signature file is damaged or was replaced: re-download or re-publish the version",
        ) from error
    if len(signature) != ED25519_SIGNATURE_BYTES:
        raise VerificationError(
            f"{source} holds {len(signature)} bytes, an Ed25519 signature has {ED25519_SIGNATURE_BYTES}",
            "the signature file is damaged or was replaced: re-download or re-publish the version",
        )
    return signature


class KeyedSignature(NamedTuple):
    """One signature of a `manifest.sig`, with the id of the key that made it (None: revision 1, a bare
    signature; the manifest's own `signing.key_id` names its key)."""

    key_id: str | None
    signature: bytes


def decode_signatures(data: bytes, *, source: str = "manifest.sig") -> tuple[KeyedSignature, ...]:
    """Reads a `manifest.sig` of either revision.

    Revision 1 (what a release writes): one line, base64 of the signature. Revision 2 (what re-signing with a new
    release key writes, `edgefleet keys resign`): one line per signature, `<key id> <base64 signature>`, so a
    manifest stays the same bytes (the same sha256 every pointer and device names) while the key changes.

    Raises:
        VerificationError: a line is neither form, or the file holds no signature.
    """
    lines = [line.strip() for line in data.splitlines() if line.strip()]
    if len(lines) == 1 and b" " not in lines[0]:
        return (KeyedSignature(None, decode_signature(lines[0], source=source)),)
    signatures: list[KeyedSignature] = []
    for line in lines:
        key_id_text, _, encoded = line.partition(b" ")
        if not _KEY_ID_LINE.fullmatch(key_id_text.decode("ascii", "replace")):
            raise VerificationError(f"{source} has a line that is not '<key id> <base64 signature>'",
                                    "the signature file is damaged or was replaced: re-download or re-sign the "
                                    "version (edgefleet keys resign)")
        signatures.append(KeyedSignature(key_id_text.decode(), decode_signature(encoded, source=source)))
    if not signatures:
        raise VerificationError(f"{source} holds no signature", "re-download or re-publish the version")
    return tuple(signatures)


def encode_signatures(signatures: Sequence[KeyedSignature]) -> bytes:
    """A revision 2 `manifest.sig`: one `<key id> <base64>` line per signature (each needs its key id)."""
    lines: list[bytes] = []
    for keyed in signatures:
        if keyed.key_id is None:
            raise ValueError("a revision 2 manifest.sig names the key of every signature")
        lines.append(keyed.key_id.encode() + b" " + encode_signature(keyed.signature))
    return b"".join(lines)


_KEY_ID_LINE = re.compile(r"[0-9a-f]{16,64}")


def _bad_public_key(source: str, reason: str) -> VerificationError:
    return VerificationError(
        f"{source} is not an Ed25519 public key: {reason}",
        "use the release public key file (PEM, or the raw key in base64 on one line)",
    )


def _read_key_file(path: Path, kind: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as error:
        raise VerificationError(
            f"{kind} key file {path} does not exist",
            "give the right path (--public-key / --signing-key) or install the release key there"
            if kind == "public"
            else "give the path of the release signing key or generate a key pair",
        ) from error
    except OSError as error:
        raise VerificationError(
            f"{kind} key file {path} cannot be read ({error.strerror})", "check the file's permissions"
        ) from error


def _write_file(path: Path, data: bytes, mode: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data, mode=mode)
    return path
