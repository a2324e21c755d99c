"""The Prefect tasks that turn a release candidate into a published version: plan (version number, channel
state), golden outputs, manifest, signature, upload, channel move and the release report's artifacts.

One task per side effect. Retries: only the registry upload, which is idempotent (publishing identical
content again is a no-op); nothing else is retried blindly. The tasks that make the candidate (dataset,
training, quantization, evaluation, compilation) are in `edgefleet.flows.release.candidate`.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from edgefleet.device.runtime.adapters.labels import class_id_count, parse_labels
from edgefleet.device.trust.version_bundle import SignedManifest
from edgefleet.flows.registry import PublishResult, RegistryWriter, open_registry_writer
from edgefleet.flows.release.bundle import build_manifest, write_signed_version
from edgefleet.flows.release.params import (
    DEFAULT_REGISTRY,
    ReleaseParams,
    SigningParams,
    expand,
)
from edgefleet.flows.release.report import artifact_key
from edgefleet.flows.trust.release_key import channel_signing_key, public_key_path, resolve_signing_key
from edgefleet.kernel.contracts.layout import (
    CPU_MODEL_FILE,
    EDGETPU_MODEL_FILE,
    LABELS_FILE,
    channel_key,
    version_prefix,
    version_sort_key,
)
from edgefleet.kernel.contracts.manifest import (
    Calibration,
    ChannelPointer,
    CompilerReport,
    GoldenOutput,
    Manifest,
    Metrics,
    Origin,
    Reference,
    SigningInfo,
)
from edgefleet.kernel.errors import ConflictError, EdgefleetError, RegistryError
from edgefleet.kernel.trust.signatures import key_id

log = logging.getLogger(__name__)

FIRST_VERSION = "1.0.0"
GIT_TIMEOUT_S = 5.0
PUBLISH_RETRIES = 2
PUBLISH_RETRY_DELAY_S = 2.0
BUILDS_DIR = "builds"


# --- results handed between tasks ------------------------------------------------------------------------


class ReleasePlan(NamedTuple):
    """What the release will write, decided before any work: version and the channel's current state.

    Attributes:
        version_uri, channel_uri: Where the version and the channel pointer go (for the report and the result).
    """

    registry_uri: str
    version: str
    channel_version_before: str | None
    version_uri: str | None = None
    channel_uri: str | None = None


class BuiltVersion(NamedTuple):
    """A version directory built locally, signed, ready to publish."""

    directory: str
    manifest: Manifest
    manifest_sha256: str
    signing_key: str
    public_key_file: str | None


# --- tasks ------------------------------------------------------------------------------------------------


def next_version(versions: list[str]) -> str:
    """The next patch version after the highest of `versions` (pure); 1.0.0 for the first."""
    if not versions:
        return FIRST_VERSION
    major, minor, patch, _ = version_sort_key(max(versions, key=version_sort_key))
    return f"{major}.{minor}.{patch + 1}"


def channel_version_before(registry: RegistryWriter, model: str, channel: str) -> str | None:
    """The version the channel names now, as the move's expected version. Not trusted here: the signed move
    verifies the pointer before building on it (and refuses one that does not verify); a pointer that is not
    even valid is read as none, so the version is still published and the move then says what is wrong."""
    try:
        state = registry.read_channel(model, channel)
    except RegistryError as error:
        log.warning("channel %s of %s: %s", channel, model, error.message)
        return None
    return state.pointer.version if state.pointer else None


@task(name="plan-release", cache_policy=NO_CACHE)
def plan_release(params: ReleaseParams) -> ReleasePlan:
    """Checks the registry is reachable, picks the version, and reads the channel to move later.

    Raises:
        RegistryError: the registry (bucket or directory) does not exist or cannot be read.
    """
    # the embedded default directory is created on first use, others must exist
    registry = open_registry_writer(params.registry, create=params.registry == DEFAULT_REGISTRY)
    versions = registry.list_versions(params.model)
    version = params.version or next_version(versions)
    before = channel_version_before(registry, params.model, params.channel) if params.channel else None
    log.info(
        "Releasing %s %s into %s (channel %s now at %s)",
        params.model,
        version,
        registry.uri,
        params.channel,
        before,
    )
    version_uri = registry.describe(version_prefix(params.model, version))
    channel_uri = registry.describe(channel_key(params.model, params.channel)) if params.channel else None
    return ReleasePlan(registry.uri, version, before, version_uri, channel_uri)


@task(name="golden-outputs", cache_policy=NO_CACHE)
def golden_outputs(int8_tflite: bytes, seeds: tuple[int, ...]) -> tuple[GoldenOutput, ...]:
    """The CPU model's raw outputs on the reference inputs a device re-runs before swapping it in."""
    from edgefleet.device.runtime.engine import Engine
    from edgefleet.device.runtime.golden import compute_golden

    with tempfile.TemporaryDirectory(prefix="edgefleet-golden-") as tmp:
        path = Path(tmp) / CPU_MODEL_FILE
        path.write_bytes(int8_tflite)
        with Engine.open(path, device="cpu") as engine:
            return compute_golden(engine, seeds)


def source_commit(explicit: str | None) -> str | None:
    """The commit to record: the explicit one, else `git rev-parse HEAD` here (None outside a repository)."""
    if explicit:
        return explicit
    git = shutil.which("git")
    if git is None:
        return None
    try:
        done = subprocess.run(
            [git, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and commit else None


@task(name="write-manifest", cache_policy=NO_CACHE)
def write_version(
    build_dir: str,
    params: ReleaseParams,
    version: str,
    labels_text: str,
    cpu_tflite: bytes,
    edgetpu_tflite: bytes | None,
    metrics: Metrics,
    compiler: CompilerReport | None,
    golden: tuple[GoldenOutput, ...],
    reference: Reference | None = None,
    model_task: str = "classification",
    origin: Origin | None = None,
    calibration: Calibration | None = None,
) -> tuple[str, Manifest]:
    """Writes the version's files into a fresh local directory and builds its manifest (not yet signed)."""
    directory = Path(build_dir)
    directory.mkdir(parents=True, exist_ok=False)
    (directory / CPU_MODEL_FILE).write_bytes(cpu_tflite)
    if edgetpu_tflite is not None:
        (directory / EDGETPU_MODEL_FILE).write_bytes(edgetpu_tflite)
    (directory / LABELS_FILE).write_text(labels_text, encoding="utf-8")
    manifest = build_manifest(
        directory,
        model=params.model,
        version=version,
        task=model_task,
        label_count=class_id_count(parse_labels(labels_text)),  # ids with gaps (COCO) are all covered
        metrics=metrics,
        compiler=compiler,
        golden=golden,
        source_commit=source_commit(params.source_commit),
    )
    if origin is not None:
        manifest = manifest.model_copy(update={"origin": origin})
    if reference is not None:  # the canary judge's reference (manifest schema 2)
        manifest = manifest.model_copy(update={"reference": reference})
    if calibration is not None:  # the label-free accuracy estimate's table (manifest schema 3)
        manifest = manifest.with_calibration(calibration)
    return str(directory), manifest


@task(name="sign-manifest", cache_policy=NO_CACHE)
def sign_version(
    directory: str, manifest: Manifest, signing: SigningParams, registry_uri: str | None = None
) -> BuiltVersion:
    """Signs the manifest (Ed25519) and writes manifest.json + manifest.sig beside the files; the manifest
    names the key and whether it is the development key (refused for a gs:// `registry_uri` unless allowed)."""
    key = resolve_signing_key(signing, registry_uri=registry_uri)
    manifest = manifest.model_copy(
        update={"signing": SigningInfo(key_id=key_id(key.private_key.public_key()), development=key.development)}
    )
    signed: SignedManifest = write_signed_version(directory, manifest, key.private_key)
    public_file = None
    if not signing.secret_block:
        candidate = public_key_path(expand(signing.key_file or signing.dev_key_file))
        public_file = str(candidate) if candidate.is_file() else None
    return BuiltVersion(directory, signed.manifest, signed.manifest_sha256, key.description, public_file)


def _retry_transient(task_obj: Any, task_run: Any, state: Any) -> bool:
    """Retry an upload only for errors that may pass: never a refused (conflicting or invalid) version."""
    try:
        state.result()
    except (
        EdgefleetError
    ):  # refused or invalid (conflict, missing bucket, bad signature): retrying won't help
        return False
    except Exception:  # noqa: BLE001 - network errors of any client library: worth another attempt
        return True
    return False


class PublishOutcome(NamedTuple):
    """What the upload did."""

    result: PublishResult
    existing: bool


@task(
    name="publish",
    cache_policy=NO_CACHE,
    retries=PUBLISH_RETRIES,
    retry_delay_seconds=PUBLISH_RETRY_DELAY_S,
    retry_condition_fn=_retry_transient,
)
def publish(registry_uri: str, built: BuiltVersion) -> PublishOutcome:
    """Uploads the signed version (immutable): identical model files already published are a no-op.

    A version that exists with the same files (its manifest differs only in times and measured latency) is
    left as it is; one with different files is refused before anything is uploaded.

    Raises:
        ConflictError: the version exists with different files.
    """
    registry = open_registry_writer(registry_uri)
    manifest = built.manifest
    if manifest.version in registry.list_versions(manifest.model):
        existing = registry.read_manifest(manifest.model, manifest.version)
        if {(f.name, f.sha256) for f in existing.manifest.files} == {
            (f.name, f.sha256) for f in manifest.files
        }:
            log.info(
                "%s %s is already published with identical files: nothing to upload",
                manifest.model,
                manifest.version,
            )
            uri = registry.describe(version_prefix(manifest.model, manifest.version))
            return PublishOutcome(
                PublishResult(manifest.model, manifest.version, uri, existing.manifest_sha256, False), True
            )
        versions = registry.list_versions(manifest.model)
        raise ConflictError(
            f"version {manifest.version} of model {manifest.model} already exists in {registry.uri} with "
            "different model files",
            f"versions are immutable: release under a new version (latest is {versions[-1]}), or leave "
            "`version` empty to take the next one",
        )
    public_key = built.public_key_file
    result = registry.publish_version(
        manifest.model, manifest.version, built.directory, public_key=public_key
    )
    return PublishOutcome(result, False)


@task(name="move-channel", cache_policy=NO_CACHE)
def move_channel(
    registry_uri: str,
    model: str,
    version: str,
    channel: str,
    expected_version: str | None,
    by: str,
    signing: SigningParams,
) -> ChannelPointer:
    """Points `channel` at `version` by compare-and-swap, if nobody moved it since the release began; the
    pointer is signed with the release key (`signing`).

    Raises:
        ConflictError: another promotion changed the channel meanwhile (it is left as they set it).
    """
    registry = open_registry_writer(registry_uri)
    return registry.promote(
        model,
        version,
        channel,
        by=by,
        expected_version=expected_version,
        signing_key=channel_signing_key(signing, registry_uri),
        validity=signing.validity,
    )


@task(name="release-report", cache_policy=NO_CACHE)
def publish_report(model: str, markdown: str, per_class: list[dict[str, object]] | None) -> None:
    """Writes the release report (and the per-class accuracy table, when evaluated) as Prefect artifacts
    under stable keys (`report.artifact_key`)."""
    create_markdown_artifact(
        markdown, key=artifact_key(model, "report"), description=f"Release report of model {model}"
    )
    if per_class is not None:
        create_table_artifact(
            per_class,
            key=artifact_key(model, "per-class-accuracy"),
            description=f"Held-out accuracy per class, float32 vs int8, of model {model}",
        )
