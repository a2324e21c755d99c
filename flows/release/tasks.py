"""The Prefect tasks of the release pipeline: one per side effect, thin wrappers over the modules.

Caching: training and conversion are cached on their real inputs (dataset fingerprint, parameters, source
of the code that produces them), in the release work directory (`<work_dir>/cache`), so re-running a release
with the same data and parameters skips them. Retries: only the registry upload, which is idempotent
(publishing identical content again is a no-op); nothing else is retried blindly.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

from prefect import task
from prefect.cache_policies import NO_CACHE, CacheKeyFnPolicy
from prefect.context import TaskRunContext

from edgefleet.device.bundle import SignedManifest, build_manifest, write_signed_version
from edgefleet.device.runtime.adapters.labels import parse_labels
from edgefleet.flows.registry import PublishResult, open_registry_writer
from edgefleet.flows.release import backbones as backbones_module
from edgefleet.flows.release import brought as brought_module
from edgefleet.flows.release import compiler as compiler_module
from edgefleet.flows.release import quantize as quantize_module
from edgefleet.flows.release import train as train_module
from edgefleet.flows.release.dataset import Dataset, load_dataset
from edgefleet.flows.release.demo_dataset import generate_demo_dataset
from edgefleet.flows.release.evaluate import Evaluation, evaluate
from edgefleet.flows.release.keys import channel_signing_key, public_key_path, resolve_signing_key
from edgefleet.flows.release.params import (
    DEFAULT_REGISTRY,
    CompileParams,
    DatasetParams,
    QuantizationParams,
    ReleaseParams,
    SigningParams,
    TfliteSource,
    TrainingParams,
    expand,
)
from edgefleet.kernel.contracts.layout import (
    CPU_MODEL_FILE,
    EDGETPU_MODEL_FILE,
    LABELS_FILE,
    version_prefix,
    version_sort_key,
)
from edgefleet.kernel.contracts.manifest import (
    ChannelPointer,
    CompilerReport,
    GoldenOutput,
    Manifest,
    Metrics,
    Origin,
    Reference,
    SigningInfo,
)
from edgefleet.kernel.errors import ConflictError, EdgefleetError
from edgefleet.kernel.signing import key_id

log = logging.getLogger(__name__)

FIRST_VERSION = "1.0.0"
COMPILER_INPUT_NAME = "model.tflite"
GIT_TIMEOUT_S = 5.0
PUBLISH_RETRIES = 2
PUBLISH_RETRY_DELAY_S = 2.0
DATASETS_DIR = "datasets"
CACHE_DIR = "cache"
BUILDS_DIR = "builds"


# --- cache keys ---------------------------------------------------------------------------------------


def _source_digest(*modules: Any) -> str:
    """sha256 of the source files of `modules`: a code change invalidates what they produced."""
    digest = hashlib.sha256()
    for module in modules:
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()


def _digest(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def _weights_digest(training: TrainingParams) -> str:
    """sha256 of a local weights file (training.weights: PATH): new weights under the same name retrain."""
    if training.weights in ("none", "imagenet"):
        return training.weights
    path = expand(training.weights)
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else f"missing:{path}"


def training_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Same dataset content and split, same training parameters, same training code: same model."""
    dataset: Dataset = parameters["dataset"]
    split: DatasetParams = parameters["split"]
    training: TrainingParams = parameters["training"]
    return "train-" + _digest(
        dataset.fingerprint,
        split.model_dump_json(include={"eval_fraction", "seed"}),
        training.model_dump_json(),
        _weights_digest(training),
        _source_digest(train_module, backbones_module),
    )


def conversion_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Same float model, same calibration images and settings, same converter code: same TFLite models."""
    trained: train_module.TrainedModel = parameters["trained"]
    dataset: Dataset = parameters["dataset"]
    quantization: QuantizationParams = parameters["quantization"]
    return "convert-" + _digest(
        trained.keras_bytes,
        dataset.fingerprint,
        quantization.model_dump_json(),
        str(parameters["seed"]),
        _source_digest(quantize_module, train_module),
    )


# --- results handed between tasks ------------------------------------------------------------------------


class ReleasePlan(NamedTuple):
    """What the release will write, decided before any work: version and the channel's current state."""

    registry_uri: str
    version: str
    channel_version_before: str | None


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
    before = None
    if params.channel:
        state = registry.read_channel(params.model, params.channel)
        before = state.pointer.version if state.pointer else None
    log.info(
        "Releasing %s %s into %s (channel %s now at %s)",
        params.model,
        version,
        registry.uri,
        params.channel,
        before,
    )
    return ReleasePlan(registry.uri, version, before)


@task(name="load-dataset", cache_policy=NO_CACHE)
def prepare_dataset(dataset: DatasetParams, input_size: int, work_dir: str) -> Dataset:
    """Loads (generating the demo first when asked) and splits the dataset; unreadable images are counted."""
    if dataset.is_demo:
        root = generate_demo_dataset(
            expand(work_dir) / DATASETS_DIR,
            dataset.demo_samples_per_class,
            dataset.demo_image_size,
            dataset.seed,
        )
    else:
        root = expand(dataset.source)
    loaded = load_dataset(root, input_size, dataset.eval_fraction, dataset.seed)
    if loaded.skipped:
        log.warning("%d unreadable image(s) skipped in %s", len(loaded.skipped), root)
    return loaded


@task(name="train", cache_policy=CacheKeyFnPolicy(cache_key_fn=training_cache_key), persist_result=True)
def train_model(
    dataset: Dataset, split: DatasetParams, training: TrainingParams
) -> train_module.TrainedModel:
    """Trains the float model (seeded); cached on dataset content + parameters."""
    return train_module.train(dataset, training)


@task(name="load-keras-model", cache_policy=NO_CACHE)
def load_keras_model(path: str, dataset: Dataset, training: TrainingParams) -> train_module.TrainedModel:
    """Loads a user-supplied Keras model instead of training; checks it fits the dataset."""
    return train_module.load_trained(expand(path), dataset, training)


@task(name="load-tflite-model", cache_policy=NO_CACHE)
def load_brought_model(source: TfliteSource) -> brought_module.BroughtModel:
    """Reads a brought .tflite and checks it: fully integer, labels fit, Edge TPU twin (if any) compiled."""
    return brought_module.load_brought(source)


@task(name="evaluate-tflite-model", cache_policy=NO_CACHE)
def evaluate_brought_model(
    dataset: Dataset, model: brought_module.BroughtModel, timed_runs: int
) -> tuple[Dataset, Evaluation]:
    """Top-1 accuracy of a brought classifier on every dataset image, through the device runtime.

    It goes through the same `evaluate` as a trained model; with no float model, the int8 model stands on
    both sides (float figures are not reported for a brought model).
    """
    held_out = brought_module.evaluation_set(dataset, model.labels)
    return held_out, evaluate(held_out, model.cpu_tflite, model.cpu_tflite, timed_runs)


@task(name="quantize", cache_policy=CacheKeyFnPolicy(cache_key_fn=conversion_cache_key), persist_result=True)
def quantize_model(
    trained: train_module.TrainedModel, dataset: Dataset, quantization: QuantizationParams, seed: int
) -> quantize_module.ConvertedModels:
    """Converts to float32 and full-integer (uint8 in/out) TFLite, calibrated on training images."""
    calibration = quantize_module.representative_images(
        dataset.train_x, quantization.representative_samples, seed
    )
    return quantize_module.convert(trained, calibration)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_models(
    dataset: Dataset, converted: quantize_module.ConvertedModels, timed_runs: int
) -> Evaluation:
    """Float32 vs int8 accuracy on the held-out split, both through the device runtime (LiteRT)."""
    return evaluate(dataset, converted.float_tflite, converted.int8_tflite, timed_runs)


@task(name="compile-edgetpu", cache_policy=NO_CACHE)
def compile_edgetpu(int8_tflite: bytes, compile_params: CompileParams) -> compiler_module.CompileOutcome:
    """Runs edgetpu_compiler (here, over SSH, or not at all) and parses its report."""
    host = compiler_module.compiler_host(compile_params)
    return compiler_module.compile_model(host, int8_tflite, COMPILER_INPUT_NAME, compile_params.require)


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
        label_count=len(parse_labels(labels_text)),
        metrics=metrics,
        compiler=compiler,
        golden=golden,
        source_commit=source_commit(params.source_commit),
    )
    if origin is not None:
        manifest = manifest.model_copy(update={"origin": origin})
    if reference is not None:  # the canary judge's reference (manifest schema 2)
        manifest = manifest.model_copy(update={"reference": reference})
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
        validity=timedelta(days=signing.pointer_validity_days),
    )
