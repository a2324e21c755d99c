"""The release keyring (`edgefleet.kernel.trust.release_keyring`), and `manifest.sig` revisions 1 and 2
(`edgefleet.kernel.trust.signatures`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet.kernel.errors import VerificationError
from edgefleet.kernel.trust.release_keyring import (
    MAX_RING_KEYS,
    Keyring,
    UnknownKeyError,
    key_file_name,
    load_keyring,
    verify_by_key_id,
)
from edgefleet.kernel.trust.signatures import (
    KeyedSignature,
    decode_signatures,
    encode_signature,
    encode_signatures,
    generate_keypair,
    key_id,
    save_public_key,
)


def test_a_single_anchor_is_a_keyring_of_one(tmp_path):
    _, public = generate_keypair()
    path = save_public_key(public, tmp_path / "keys" / "release.pub")
    ring = load_keyring(path)
    assert ring.ids == (key_id(public),) and ring.problems == ()


def test_the_keyring_beside_the_anchor_adds_its_keys_and_stands_alone_without_it(tmp_path):
    _, old = generate_keypair()
    _, new = generate_keypair()
    anchor = save_public_key(old, tmp_path / "keys" / "release.pub")
    save_public_key(new, tmp_path / "keys" / "release.d" / key_file_name(new), encoding="base64")
    assert set(load_keyring(anchor).ids) == {key_id(old), key_id(new)}
    anchor.unlink()  # the single anchor retired: the directory alone, whether named by the file or itself
    assert load_keyring(anchor).ids == (key_id(new),) == load_keyring(tmp_path / "keys" / "release.d").ids


def test_no_key_at_all_is_an_error_naming_the_path(tmp_path):
    with pytest.raises(VerificationError, match="release.pub does not exist"):
        load_keyring(tmp_path / "release.pub")
    (tmp_path / "empty.d").mkdir()
    with pytest.raises(VerificationError, match="holds no trusted release key"):
        load_keyring(tmp_path / "empty.d")


def test_a_keyring_with_too_many_files_is_refused_unread(tmp_path):
    ring = tmp_path / "release.d"
    ring.mkdir()
    for index in range(MAX_RING_KEYS + 1):
        (ring / f"{index:016x}.pub").write_text("x")
    with pytest.raises(VerificationError, match="more than"):
        load_keyring(ring)


def test_a_signature_is_checked_with_the_key_its_id_names():
    first, first_public = generate_keypair()
    second, second_public = generate_keypair()
    ring = Keyring.of([first_public, second_public])
    data = b"pointer bytes"
    assert verify_by_key_id(ring, data, second.sign(data), key_id=key_id(second_public), what="x") == \
        key_id(second_public)
    with pytest.raises(VerificationError, match="not signed by key") as caught:  # named key, wrong signature
        verify_by_key_id(ring, data, first.sign(data), key_id=key_id(second_public), what="x")
    assert not isinstance(caught.value, UnknownKeyError)  # tampering: a lasting verdict
    stranger, stranger_public = generate_keypair()
    with pytest.raises(UnknownKeyError, match=f"names key {key_id(stranger_public)}"):
        verify_by_key_id(ring, data, stranger.sign(data), key_id=key_id(stranger_public), what="x")
    assert verify_by_key_id(ring, data, first.sign(data), key_id=None, what="x") == key_id(first_public)  # unnamed


def test_manifest_sig_revision_1_and_2_read_back():
    private, public = generate_keypair()
    signature = private.sign(b"manifest")
    assert decode_signatures(encode_signature(signature)) == (KeyedSignature(None, signature),)
    two = (KeyedSignature(key_id(public), signature), KeyedSignature("0" * 16, signature))
    assert decode_signatures(encode_signatures(two)) == two
    with pytest.raises(VerificationError, match="not '<key id> <base64 signature>'"):
        decode_signatures(b"NOT-AN-ID " + encode_signature(signature))
    with pytest.raises(ValueError):
        encode_signatures([KeyedSignature(None, signature)])


def test_a_key_id_shorter_than_16_hex_digits_finds_nothing():
    _, public = generate_keypair()
    assert Keyring.of([public]).find(key_id(public)[:8]) is None


def test_keyring_paths_for_writable_checks(tmp_path: Path):
    from edgefleet.kernel.trust.release_keyring import ring_paths

    _, public = generate_keypair()
    anchor = save_public_key(public, tmp_path / "release.pub")
    key_file = save_public_key(public, tmp_path / "release.d" / key_file_name(public))
    assert ring_paths(anchor) == [anchor, tmp_path / "release.d", key_file]
