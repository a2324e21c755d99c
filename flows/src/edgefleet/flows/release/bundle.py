"""Building signed model version bundles: the release pipeline's side of `edgefleet.device.trust.version_bundle`.

A version directory holds the model files (`model_cpu.tflite`, optionally `model_edgetpu.tflite`,
`labels.txt`, ...), `manifest.json` naming every one of them with its sha256 and size, and `manifest.sig`,
the base64 Ed25519 signature over the exact bytes of `manifest.json` (the layout is described in
`edgefleet.device.trust.version_bundle`, which reads and verifies it on devices). Building and signing one is pipeline
work, so it lives here and never ships in the running agent:

    manifest = build_manifest(version_dir, model="birds", version="1.2.0", input=spec, outputs=(out,))
    write_signed_version(version_dir, manifest, private_key)

or in one call from files elsewhere: `create_version_dir(dest, {"model_cpu.tflite": path, ...}, ...)`.

Kept Python 3.9 compatible: the device tests build their fixture versions with it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgefleet.device.runtime.adapters.labels import class_id_count, parse_labels
from edgefleet.device.trust.version_bundle import (
    SignedManifest,
    check_manifest_consistency,
    check_version_files,
    sha256_file,
    version_files,
)
from edgefleet.kernel.contracts.layout import (
    CPU_MODEL_FILE,
    EDGETPU_MODEL_FILE,
    LABELS_FILE,
    MANIFEST_FILE,
    SIGNATURE_FILE,
)
from edgefleet.kernel.contracts.manifest import (
    CompilerReport,
    FileEntry,
    GoldenOutput,
    Manifest,
    Metrics,
    TensorSpec,
)
from edgefleet.kernel.errors import ModelError
from edgefleet.kernel.fsutil import atomic_write_bytes
from edgefleet.kernel.trust.signatures import encode_signature, sign

_AUTO: Any = object()


def file_entry(path: str | os.PathLike[str], name: str | None = None) -> FileEntry:
    """The manifest entry (name, sha256, size) of one file."""
    path = Path(path)
    return FileEntry(name=name or path.name, sha256=sha256_file(path), size=path.stat().st_size)


def build_manifest(
    version_dir: str | os.PathLike[str],
    *,
    model: str,
    version: str,
    input: TensorSpec | None = None,  # noqa: A002 - the manifest's field name
    outputs: Sequence[TensorSpec] | None = None,
    task: str = "classification",
    variants: Mapping[str, str] | None = None,
    labels_file: str | None = _AUTO,
    label_count: int | None = None,
    metrics: Metrics | None = None,
    compiler: CompilerReport | None = None,
    golden: Sequence[GoldenOutput] = (),
    golden_tolerance: float | None = None,
    source_commit: str | None = None,
    created_at: datetime | None = None,
) -> Manifest:
    """Builds the manifest of a version directory: every regular file in it but `manifest.json` / `manifest.sig`
    listed with its sha256 and size.

    Args:
        version_dir: the directory holding the version's files.
        model: model name (layout rules: lowercase, digits, `._-`).
        version: semantic version, e.g. "1.2.0".
        input: the model's input spec. When omitted (with `outputs`), both are read from the CPU model with
            `edgefleet.device.runtime.interpreter.inspect_model`.
        outputs: the model's output specs.
        task: "classification" or "detection".
        variants: variant -> file name. Default: "cpu" -> model_cpu.tflite, plus "edgetpu" ->
            model_edgetpu.tflite when that file exists.
        labels_file: the labels file name, None for none. Default: labels.txt when it exists.
        label_count: the class ids the labels span (highest id + 1: COCO's 80 labels with gaps span 90);
            default: read from the labels file.
        metrics, compiler, golden, golden_tolerance, source_commit, created_at: copied into the manifest.

    Returns:
        The manifest (not yet signed: see `write_signed_version`).

    Raises:
        ModelError: the directory is missing or has no CPU model.
        ValueError: a field breaks the manifest contract (pydantic's message names it).
    """
    version_dir = Path(version_dir)
    contents = _read_contents(version_dir, variants, labels_file, label_count, input, outputs)
    given = {"golden_tolerance": golden_tolerance, "created_at": created_at}  # else the manifest's defaults
    fields: dict[str, Any] = {
        **contents._asdict(),
        "model": model,
        "version": version,
        "task": task,
        "metrics": metrics or Metrics(),
        "compiler": compiler,
        "golden": tuple(golden),
        "source_commit": source_commit,
        **{name: value for name, value in given.items() if value is not None},
    }
    manifest = Manifest(**fields)
    check_manifest_consistency(manifest, str(version_dir))
    return manifest


class _Contents(NamedTuple):
    """What a version directory holds, as the manifest names it."""

    files: tuple[FileEntry, ...]
    variants: dict[str, str]
    labels_file: str | None
    label_count: int | None
    input: TensorSpec
    outputs: tuple[TensorSpec, ...]


def _read_contents(
    version_dir: Path,
    variants: Mapping[str, str] | None,
    labels_file: str | None,
    label_count: int | None,
    input_spec: TensorSpec | None,
    outputs: Sequence[TensorSpec] | None,
) -> _Contents:
    """Hashes every file of `version_dir` and fills in what was not given: the variants, the labels file and
    its count, and the model's specs (read from its CPU model).

    Raises:
        ModelError: the directory is missing or has no CPU model.
    """
    if not version_dir.is_dir():
        raise ModelError(
            f"version directory {version_dir} does not exist", "create it and put the model files in it first"
        )
    names = version_files(version_dir)
    variants = variants_of(names, variants, version_dir)
    labels_file, label_count = _labels(version_dir, names, labels_file, label_count)
    if input_spec is None or outputs is None:
        input_spec, outputs = _specs_from_model(version_dir / variants["cpu"], input_spec, outputs)
    files = tuple(file_entry(version_dir / name) for name in names)
    return _Contents(files, dict(variants), labels_file, label_count, input_spec, tuple(outputs))


def variants_of(names: Sequence[str], variants: Mapping[str, str] | None, version_dir: Path) -> dict[str, str]:
    """The manifest's variants (variant -> file name) for a directory holding `names`: `variants` as given, or
    "cpu" plus "edgetpu" when its model is there. Pure.

    Raises:
        ModelError: no CPU model among `names` (every version ships one).
    """
    if variants is None:
        variants = {"cpu": CPU_MODEL_FILE, **({"edgetpu": EDGETPU_MODEL_FILE} if EDGETPU_MODEL_FILE in names else {})}
    cpu_file = variants.get("cpu")
    if cpu_file is None or cpu_file not in names:
        raise ModelError(
            f"version directory {version_dir} has no CPU model {cpu_file or CPU_MODEL_FILE}",
            "every version ships a CPU model: add it (or name it in variants['cpu'])",
        )
    return dict(variants)


def _labels(
    version_dir: Path, names: Sequence[str], labels_file: str | None, label_count: int | None
) -> tuple[str | None, int | None]:
    """The labels file (default: labels.txt when it is there) and the label count (default: counted in it)."""
    if labels_file is _AUTO:
        labels_file = LABELS_FILE if LABELS_FILE in names else None
    if labels_file is not None and label_count is None:
        label_count = _count_labels(version_dir / labels_file)
    return labels_file, label_count


def write_signed_version(
    dest_dir: str | os.PathLike[str], manifest: Manifest, private_key: Ed25519PrivateKey
) -> SignedManifest:
    """Signs `manifest` and writes `manifest.json` and `manifest.sig` into `dest_dir`.

    The files in `dest_dir` are checked against the manifest first, so a manifest that does not describe
    the directory is never signed.

    Returns:
        The signed manifest (its `manifest_sha256` is what a channel pointer names).

    Raises:
        VerificationError: a file in `dest_dir` is missing, unlisted or differs from its manifest entry.
    """
    dest_dir = Path(dest_dir)
    check_manifest_consistency(manifest, str(dest_dir))
    check_version_files(dest_dir, manifest)
    raw = manifest.to_json_bytes()
    signature = sign(private_key, raw)
    atomic_write_bytes(dest_dir / MANIFEST_FILE, raw)
    atomic_write_bytes(dest_dir / SIGNATURE_FILE, encode_signature(signature))
    return SignedManifest(manifest, raw, signature)


def create_version_dir(
    dest_dir: str | os.PathLike[str],
    files: Mapping[str, str | os.PathLike[str] | bytes],
    *,
    private_key: Ed25519PrivateKey,
    model: str,
    version: str,
    **manifest_fields: Any,
) -> SignedManifest:
    """Creates a signed version directory from files kept elsewhere (copied) or bytes.

    Args:
        dest_dir: the directory to create (it may exist but must be empty).
        files: file name in the version -> source path or content.
        private_key: the release signing key.
        model, version, **manifest_fields: passed to `build_manifest`.

    Raises:
        ModelError: `dest_dir` is not empty.
    """
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    if any(dest_dir.iterdir()):
        raise ModelError(f"{dest_dir} is not empty", "build a version in a new, empty directory")
    for name, source in files.items():
        FileEntry(name=name, sha256="0" * 64, size=0)  # validates the name is a plain file name
        if isinstance(source, bytes):
            (dest_dir / name).write_bytes(source)
        else:
            shutil.copyfile(source, dest_dir / name)
    manifest = build_manifest(dest_dir, model=model, version=version, **manifest_fields)
    return write_signed_version(dest_dir, manifest, private_key)


def _count_labels(path: Path) -> int:
    """The class ids the labels file spans (`class_id_count`: its highest id + 1, gaps included)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelError(
            f"labels file {path} does not exist",
            "add the labels file to the version directory or pass labels_file=None",
        ) from None
    try:
        return class_id_count(parse_labels(text))
    except ValueError as error:
        raise ModelError(f"labels file {path}: {error}", "give each class id one line") from None


def _specs_from_model(
    model_path: Path, input_spec: TensorSpec | None, outputs: Sequence[TensorSpec] | None
) -> tuple[TensorSpec, Sequence[TensorSpec]]:
    """Reads the input/output specs of a .tflite with the device runtime (only when not given)."""
    from edgefleet.device.runtime.interpreter import inspect_model

    info = inspect_model(model_path)
    return input_spec or info.inputs[0], outputs if outputs is not None else tuple(info.outputs)
