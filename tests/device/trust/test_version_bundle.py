"""Building, signing and verifying version directories (tampered file, tampered manifest, wrong key)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from edgefleet.device.trust.version_bundle import read_signed_manifest, sha256_file, verify_version_dir
from edgefleet.flows.release.bundle import build_manifest, write_signed_version
from edgefleet.kernel.contracts.layout import MANIFEST_FILE, SIGNATURE_FILE
from edgefleet.kernel.errors import ModelError, VerificationError
from edgefleet.kernel.trust.signatures import decode_signature, verify
from tests.device.store_fixtures import INPUT_SPEC, OUTPUT_SPEC, Keys, VersionFactory


def test_manifest_lists_every_file_with_sha256_and_size(make_version: VersionFactory, keys: Keys) -> None:
    directory = make_version("birds", "1.2.0")
    signed = read_signed_manifest(directory)

    names = sorted(
        path.name for path in directory.iterdir() if path.name not in {MANIFEST_FILE, SIGNATURE_FILE}
    )
    assert [entry.name for entry in signed.manifest.files] == names
    for entry in signed.manifest.files:
        content = (directory / entry.name).read_bytes()
        assert entry.sha256 == hashlib.sha256(content).hexdigest()
        assert entry.size == len(content)
    assert signed.manifest.variants == {"cpu": "model_cpu.tflite", "edgetpu": "model_edgetpu.tflite"}
    assert signed.manifest.label_count == 3
    # manifest.sig is base64 of the signature over the exact bytes of manifest.json
    assert signed.raw == (directory / MANIFEST_FILE).read_bytes()
    verify(keys.public, signed.raw, decode_signature((directory / SIGNATURE_FILE).read_bytes()))


def test_verify_accepts_an_intact_version(make_version: VersionFactory, keys: Keys) -> None:
    directory = make_version("birds", "1.0.0")
    manifest = verify_version_dir(directory, keys.public_file, model="birds", version="1.0.0")
    assert (manifest.model, manifest.version) == ("birds", "1.0.0")


def test_one_changed_byte_in_a_model_file_is_refused_naming_the_file(
    make_version: VersionFactory, keys: Keys
) -> None:
    directory = make_version()
    model_file = directory / "model_cpu.tflite"
    content = bytearray(model_file.read_bytes())
    content[100] ^= 0x01
    model_file.write_bytes(bytes(content))

    with pytest.raises(VerificationError) as caught:
        verify_version_dir(directory, keys.public_file)
    assert "model_cpu.tflite" in caught.value.message
    assert "changed after signing" in caught.value.message
    assert "download or install it again" in caught.value.fix


def test_truncated_file_is_refused_with_its_size(make_version: VersionFactory, keys: Keys) -> None:
    directory = make_version()
    labels = directory / "labels.txt"
    labels.write_bytes(labels.read_bytes()[:-5])
    with pytest.raises(VerificationError, match=r"labels.txt .* has \d+ bytes, its manifest says"):
        verify_version_dir(directory, keys.public_file)


def test_tampered_manifest_is_refused_by_the_signature(make_version: VersionFactory, keys: Keys) -> None:
    directory = make_version()
    # An attacker swaps the model and rewrites its hash in the manifest: the signature no longer matches.
    (directory / "model_cpu.tflite").write_bytes(b"evil model")
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    for entry in manifest["files"]:
        if entry["name"] == "model_cpu.tflite":
            entry["sha256"] = sha256_file(directory / "model_cpu.tflite")
            entry["size"] = len(b"evil model")
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")

    with pytest.raises(VerificationError) as caught:
        verify_version_dir(directory, keys.public_file)
    assert "signature check failed" in caught.value.message
    assert MANIFEST_FILE in caught.value.message


def test_wrong_public_key_is_refused_naming_the_key_file(
    make_version: VersionFactory, other_keys: Keys
) -> None:
    directory = make_version()
    with pytest.raises(VerificationError) as caught:
        verify_version_dir(directory, other_keys.public_file)
    assert str(other_keys.public_file) in caught.value.message
    assert str(other_keys.public_file) in caught.value.fix


def test_unlisted_file_is_refused(make_version: VersionFactory, keys: Keys) -> None:
    directory = make_version()
    (directory / "extra_model.tflite").write_bytes(b"smuggled")
    with pytest.raises(VerificationError, match="extra_model.tflite .* not listed"):
        verify_version_dir(directory, keys.public_file)


def test_missing_file_or_signature_is_refused(make_version: VersionFactory, keys: Keys) -> None:
    directory = make_version()
    (directory / "model_edgetpu.tflite").unlink()
    with pytest.raises(VerificationError, match="model_edgetpu.tflite listed in the manifest is missing"):
        verify_version_dir(directory, keys.public_file)
    (directory / SIGNATURE_FILE).unlink()
    with pytest.raises(VerificationError, match="has no manifest.sig"):
        verify_version_dir(directory, keys.public_file)


def test_version_for_another_model_is_refused(make_version: VersionFactory, keys: Keys) -> None:
    directory = make_version("birds", "1.0.0")
    with pytest.raises(VerificationError, match="holds birds 1.0.0, expected birds 2.0.0"):
        verify_version_dir(directory, keys.public_file, version="2.0.0")


def test_write_signed_version_refuses_a_manifest_that_does_not_match_the_directory(
    make_version: VersionFactory, keys: Keys, tmp_path: Path
) -> None:
    directory = make_version()
    manifest = read_signed_manifest(directory).manifest
    copy = tmp_path / "copy"
    shutil.copytree(directory, copy)
    (copy / "labels.txt").write_text("other\nlabels\n")
    with pytest.raises(VerificationError, match="labels.txt"):
        write_signed_version(copy, manifest, keys.private)


def test_build_manifest_needs_a_cpu_model(tmp_path: Path) -> None:
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "model_edgetpu.tflite").write_bytes(b"tpu only")
    with pytest.raises(ModelError, match="no CPU model"):
        build_manifest(
            tmp_path / "v", model="birds", version="1.0.0", input=INPUT_SPEC, outputs=(OUTPUT_SPEC,)
        )


def test_build_manifest_reads_specs_from_a_real_tflite(coral_data: Path, tmp_path: Path, keys: Keys) -> None:
    directory = tmp_path / "mobilenet"
    directory.mkdir()
    shutil.copyfile(coral_data / "mobilenet_v1_0.25_128_quant.tflite", directory / "model_cpu.tflite")
    shutil.copyfile(
        coral_data / "mobilenet_v1_0.25_128_quant_edgetpu.tflite", directory / "model_edgetpu.tflite"
    )
    shutil.copyfile(coral_data / "imagenet_labels.txt", directory / "labels.txt")

    manifest = build_manifest(directory, model="mobilenet", version="1.0.0")
    write_signed_version(directory, manifest, keys.private)

    assert manifest.input.shape == (1, 128, 128, 3)
    assert manifest.input.dtype == "uint8"
    assert manifest.outputs[0].shape == (1, 1001)
    assert manifest.label_count == 1001
    assert verify_version_dir(directory, keys.public_file) == manifest
