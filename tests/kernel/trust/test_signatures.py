"""Ed25519 keys and signatures: real cryptography, real key files."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from edgefleet.kernel.errors import VerificationError
from edgefleet.kernel.trust.signatures import (
    decode_signature,
    encode_signature,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_key,
    public_key_raw,
    save_private_key,
    save_public_key,
    sign,
    verify,
)


def test_sign_and_verify_round_trip_through_key_files(tmp_path: Path) -> None:
    private_key, public_key = generate_keypair()
    save_private_key(private_key, tmp_path / "release.key")
    save_public_key(public_key, tmp_path / "release.pub")

    signature = sign(load_private_key(tmp_path / "release.key"), b"manifest bytes")

    assert len(signature) == 64
    verify(load_public_key(tmp_path / "release.pub"), b"manifest bytes", signature)
    verify(tmp_path / "release.pub", b"manifest bytes", signature)  # a path works too


def test_private_key_file_is_owner_only(tmp_path: Path) -> None:
    private_key, _ = generate_keypair()
    path = save_private_key(private_key, tmp_path / "keys" / "release.key")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_public_key_in_raw_base64_is_accepted(tmp_path: Path) -> None:
    private_key, public_key = generate_keypair()
    path = save_public_key(public_key, tmp_path / "release.pub", encoding="base64")
    assert base64.b64decode(path.read_text().strip()) == public_key_raw(public_key)
    verify(load_public_key(path), b"data", sign(private_key, b"data"))


def test_encrypted_private_key_needs_its_passphrase(tmp_path: Path) -> None:
    private_key, public_key = generate_keypair()
    path = save_private_key(private_key, tmp_path / "release.key", passphrase=b"s3cret")
    with pytest.raises(VerificationError, match="release.key"):
        load_private_key(path)
    loaded = load_private_key(path, passphrase=b"s3cret")
    verify(public_key, b"x", sign(loaded, b"x"))


def test_altered_data_fails_naming_what_and_the_key_file(tmp_path: Path) -> None:
    private_key, public_key = generate_keypair()
    key_file = save_public_key(public_key, tmp_path / "release.pub")
    signature = sign(private_key, b"version 1.0.0")
    with pytest.raises(VerificationError) as caught:
        verify(key_file, b"version 1.0.1", signature, what="manifest.json of birds")
    assert "manifest.json of birds" in caught.value.message
    assert str(key_file) in caught.value.message
    assert key_id(public_key) in caught.value.message
    assert caught.value.fix


def test_wrong_public_key_fails(tmp_path: Path) -> None:
    private_key, _ = generate_keypair()
    _, other_public = generate_keypair()
    other_file = save_public_key(other_public, tmp_path / "other.pub")
    with pytest.raises(VerificationError, match="other.pub"):
        verify(other_file, b"data", sign(private_key, b"data"))


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"not a key at all", "neither PEM nor base64"),
        (base64.b64encode(b"short"), "decodes to 5 bytes"),
        (b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "not an Ed25519 public key"),
    ],
)
def test_malformed_public_key_file_is_named(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "broken.pub"
    path.write_bytes(content)
    with pytest.raises(VerificationError, match=reason) as caught:
        load_public_key(path)
    assert str(path) in caught.value.message


def test_missing_public_key_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(VerificationError, match="does not exist") as caught:
        load_public_key(tmp_path / "nowhere.pub")
    assert "nowhere.pub" in caught.value.message
    assert "--public-key" in caught.value.fix


def test_signature_file_encoding_round_trip_and_damage() -> None:
    private_key, _ = generate_keypair()
    signature = sign(private_key, b"x")
    assert decode_signature(encode_signature(signature)) == signature
    with pytest.raises(VerificationError, match="not base64"):
        decode_signature(b"%%%")
    with pytest.raises(VerificationError, match="holds 3 bytes"):
        decode_signature(base64.b64encode(b"abc"), source="models/birds/1.0.0/manifest.sig")
