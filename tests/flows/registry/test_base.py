"""Registry clients (reader and writer) on both backends: a local directory and the real GCS emulator (with
preconditions).

Tests taking the `registry` fixture run once per backend.
"""

from __future__ import annotations

import base64
import hashlib
import multiprocessing
import queue
import threading
import time
from pathlib import Path

import pytest
from gcp_storage_emulator.server import create_server
from google.api_core import exceptions as google_errors
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from edgefleet.device.registry import (
    GcsLocation,
    GcsRegistryReader,
    LocalLocation,
    LocalRegistryReader,
    open_registry_reader,
    parse_registry_uri,
)
from edgefleet.device.trust.version_bundle import read_signed_manifest, verify_version_dir
from edgefleet.flows.registry import (
    GcsRegistryWriter,
    LocalRegistryWriter,
    RegistryWriter,
    open_registry_writer,
    rollout_key,
)
from edgefleet.kernel.contracts.layout import SIGNATURE_FILE, channel_key
from edgefleet.kernel.contracts.manifest import ChannelPointer
from edgefleet.kernel.errors import ConflictError, RegistryError, VerificationError
from edgefleet.local.emulators import GcsEmulator, free_port
from edgefleet.local.gcs_preconditions import enforce_generation_preconditions
from tests.device.store_fixtures import Keys, VersionFactory

from . import _workers

WORKERS = 4
JOIN_TIMEOUT_S = 120


def publish(registry: RegistryWriter, make_version: VersionFactory, model: str, version: str) -> str:
    """Publishes a fresh version; returns its manifest sha256."""
    return registry.publish_version(model, version, make_version(model, version)).manifest_sha256


# --- versions ---------------------------------------------------------------------------------------


def test_publish_list_read_download_round_trip(
    registry: RegistryWriter, make_version: VersionFactory, keys: Keys, tmp_path: Path
) -> None:
    source = make_version("birds", "1.0.0")
    result = registry.publish_version("birds", "1.0.0", source, public_key=keys.public_file)
    registry.publish_version("birds", "1.10.0", make_version("birds", "1.10.0"))
    registry.publish_version("birds", "1.9.0", make_version("birds", "1.9.0"))
    registry.publish_version("cats", "0.1.0", make_version("cats", "0.1.0"))

    assert result.created
    assert registry.list_models() == ["birds", "cats"]
    assert registry.list_versions("birds") == ["1.0.0", "1.9.0", "1.10.0"]
    signed = registry.read_manifest("birds", "1.0.0")
    local = read_signed_manifest(source)
    assert signed.raw == local.raw
    assert signed.signature == local.signature
    assert signed.manifest_sha256 == result.manifest_sha256

    downloaded = tmp_path / "downloaded"
    registry.download_version("birds", "1.0.0", downloaded)
    assert sorted(p.name for p in downloaded.iterdir()) == sorted(p.name for p in source.iterdir())
    for path in source.iterdir():
        assert (downloaded / path.name).read_bytes() == path.read_bytes()
    assert verify_version_dir(downloaded, keys.public_file).version == "1.0.0"
    assert registry.verify_version("birds", "1.0.0", keys.public_file).model == "birds"


def test_publishing_identical_content_again_is_a_no_op(
    registry: RegistryWriter, make_version: VersionFactory, tmp_path: Path
) -> None:
    source = make_version("birds", "1.0.0")
    first = registry.publish_version("birds", "1.0.0", source)
    again = registry.publish_version("birds", "1.0.0", source)
    assert first.created and not again.created
    assert again.manifest_sha256 == first.manifest_sha256


def test_publishing_different_content_under_an_existing_version_is_refused(
    registry: RegistryWriter, make_version: VersionFactory, tmp_path: Path
) -> None:
    original = make_version("birds", "1.0.0")
    registry.publish_version("birds", "1.0.0", original)
    changed = make_version("birds", "1.0.0", files={"model_cpu.tflite": b"retrained"})
    with pytest.raises(ConflictError, match="already exists .* with different content") as caught:
        registry.publish_version("birds", "1.0.0", changed)
    assert "new version" in caught.value.fix
    # the published version is untouched
    registry.download_version("birds", "1.0.0", tmp_path / "check")
    assert (tmp_path / "check" / "model_cpu.tflite").read_bytes() == (
        original / "model_cpu.tflite"
    ).read_bytes()


def test_a_tampered_local_directory_is_not_published(
    registry: RegistryWriter, make_version: VersionFactory, keys: Keys
) -> None:
    source = make_version("birds", "1.0.0")
    (source / "model_cpu.tflite").write_bytes(b"changed after signing")
    with pytest.raises(VerificationError, match="model_cpu.tflite"):
        registry.publish_version("birds", "1.0.0", source)
    assert registry.list_versions("birds") == []


def test_publish_checks_the_signature_when_given_a_key(
    registry: RegistryWriter, make_version: VersionFactory, other_keys: Keys
) -> None:
    with pytest.raises(VerificationError, match=str(other_keys.public_file)):
        registry.publish_version(
            "birds", "1.0.0", make_version("birds", "1.0.0"), public_key=other_keys.public_file
        )
    assert registry.list_versions("birds") == []


def test_reading_a_version_that_is_not_published(registry: RegistryWriter, make_version: VersionFactory) -> None:
    publish(registry, make_version, "birds", "1.0.0")
    with pytest.raises(RegistryError, match="version 2.0.0 of model birds is not published") as caught:
        registry.read_manifest("birds", "2.0.0")
    assert "1.0.0" in caught.value.fix


# --- channels ---------------------------------------------------------------------------------------


def test_channel_compare_and_swap(registry: RegistryWriter, make_version: VersionFactory) -> None:
    sha1 = publish(registry, make_version, "birds", "1.0.0")
    sha2 = publish(registry, make_version, "birds", "2.0.0")
    assert registry.read_channel("birds", "stable") == (None, 0)

    first = ChannelPointer(model="birds", channel="stable", version="1.0.0", manifest_sha256=sha1)
    generation = registry.set_channel("birds", "stable", first, 0)
    with pytest.raises(ConflictError):  # 0 = must not exist
        registry.set_channel("birds", "stable", first, 0)

    state = registry.read_channel("birds", "stable")
    assert state.pointer == first
    assert state.generation == generation != 0

    second = ChannelPointer(model="birds", channel="stable", version="2.0.0", manifest_sha256=sha2)
    new_generation = registry.set_channel("birds", "stable", second, generation)
    assert new_generation != generation
    with pytest.raises(ConflictError):  # stale generation
        registry.set_channel("birds", "stable", first, generation)
    assert registry.read_channel("birds", "stable").pointer.version == "2.0.0"
    assert registry.list_channels("birds") == ["stable"]


def test_promote_names_the_version_and_its_manifest(
    registry: RegistryWriter, make_version: VersionFactory, keys: Keys
) -> None:
    sha = publish(registry, make_version, "birds", "1.0.0")
    pointer = registry.promote("birds", "1.0.0", "canary", by="alice", public_key=keys.public_file)
    assert (pointer.version, pointer.manifest_sha256, pointer.updated_by) == ("1.0.0", sha, "alice")
    assert registry.read_channel("birds", "canary").pointer == pointer
    # promoting again is idempotent: the pointer is not rewritten
    assert registry.promote("birds", "1.0.0", "canary", by="bob") == pointer


def test_promote_refuses_an_unpublished_version(registry: RegistryWriter, make_version: VersionFactory) -> None:
    publish(registry, make_version, "birds", "1.0.0")
    with pytest.raises(RegistryError, match="2.0.0 of model birds is not published"):
        registry.promote("birds", "2.0.0", "stable")
    assert registry.read_channel("birds", "stable").pointer is None


def test_promote_refuses_when_the_channel_is_not_where_the_caller_expects(
    registry: RegistryWriter, make_version: VersionFactory
) -> None:
    for version in ("1.0.0", "2.0.0", "3.0.0"):
        publish(registry, make_version, "birds", version)
    registry.promote("birds", "2.0.0", "stable", by="alice")
    with pytest.raises(ConflictError, match="names 2.0.0 by alice, not 1.0.0"):
        registry.promote("birds", "3.0.0", "stable", expected_version="1.0.0")
    assert registry.read_channel("birds", "stable").pointer.version == "2.0.0"


def test_promote_with_a_wrong_key_does_not_move_the_channel(
    registry: RegistryWriter, make_version: VersionFactory, other_keys: Keys
) -> None:
    publish(registry, make_version, "birds", "1.0.0")
    with pytest.raises(VerificationError):
        registry.promote("birds", "1.0.0", "stable", public_key=other_keys.public_file)
    assert registry.read_channel("birds", "stable").pointer is None


def test_concurrent_promotions_with_threads_exactly_one_wins(
    registry: RegistryWriter, make_version: VersionFactory
) -> None:
    versions = [f"2.{index}.0" for index in range(WORKERS)]
    shas = {version: publish(registry, make_version, "birds", version) for version in ["1.0.0", *versions]}
    registry.promote("birds", "1.0.0", "stable")
    generation = registry.read_channel("birds", "stable").generation
    barrier = threading.Barrier(WORKERS)
    outcomes: list[tuple[str, str]] = []
    lock = threading.Lock()

    def compete(version: str) -> None:
        pointer = ChannelPointer(
            model="birds", channel="stable", version=version, manifest_sha256=shas[version]
        )
        barrier.wait(JOIN_TIMEOUT_S)
        try:
            registry.set_channel("birds", "stable", pointer, generation)
            outcome = "won"
        except ConflictError:
            outcome = "conflict"
        with lock:
            outcomes.append((version, outcome))

    threads = [threading.Thread(target=compete, args=(version,)) for version in versions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT_S)
    winners = [version for version, outcome in outcomes if outcome == "won"]
    assert len(outcomes) == WORKERS
    assert len(winners) == 1
    assert registry.read_channel("birds", "stable").pointer.version == winners[0]


def test_concurrent_promote_calls_from_the_same_baseline_exactly_one_wins(
    registry: RegistryWriter, make_version: VersionFactory
) -> None:
    versions = [f"2.{index}.0" for index in range(WORKERS)]
    for version in ["1.0.0", *versions]:
        publish(registry, make_version, "birds", version)
    registry.promote("birds", "1.0.0", "stable")
    barrier = threading.Barrier(WORKERS)
    outcomes: queue.Queue[tuple[str, str]] = queue.Queue()

    def compete(version: str) -> None:
        barrier.wait(JOIN_TIMEOUT_S)
        try:
            registry.promote("birds", version, "stable", expected_version="1.0.0")
            outcomes.put((version, "won"))
        except ConflictError:
            outcomes.put((version, "conflict"))

    threads = [threading.Thread(target=compete, args=(version,)) for version in versions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT_S)
    results = [outcomes.get_nowait() for _ in range(WORKERS)]
    winners = [version for version, outcome in results if outcome == "won"]
    assert len(winners) == 1
    assert registry.read_channel("birds", "stable").pointer.version == winners[0]


def run_competing_processes(
    target: object, argument_lists: list[tuple], monkeypatch: pytest.MonkeyPatch
) -> list[tuple[str, str]]:
    """Runs `target` in one spawned process per argument tuple, released together by a barrier."""
    # spawned children import the worker module by name: let them find this test package
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "device"))
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(argument_lists))
    results = context.Queue()
    processes = [
        context.Process(target=target, args=(*arguments, barrier, results)) for arguments in argument_lists
    ]
    for process in processes:
        process.start()
    outcomes: list[tuple[str, str]] = []
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    try:
        while len(outcomes) < len(processes) and time.monotonic() < deadline:
            try:
                outcomes.append(results.get(timeout=1))
            except queue.Empty:
                crashed = [process for process in processes if process.exitcode not in (None, 0)]
                assert not crashed, f"worker processes failed: {[process.exitcode for process in crashed]}"
    finally:
        for process in processes:
            process.join(JOIN_TIMEOUT_S)
    assert [process.exitcode for process in processes] == [0] * len(processes)
    return outcomes


def test_concurrent_promotions_in_separate_processes_on_the_local_registry(
    local_registry: LocalRegistryWriter, make_version: VersionFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    versions = [f"2.{index}.0" for index in range(WORKERS)]
    shas = {
        version: publish(local_registry, make_version, "birds", version) for version in ["1.0.0", *versions]
    }
    local_registry.promote("birds", "1.0.0", "stable")
    generation = local_registry.read_channel("birds", "stable").generation

    outcomes = run_competing_processes(
        _workers.set_channel_worker,
        [
            (str(local_registry.root), "birds", "stable", version, shas[version], generation)
            for version in versions
        ],
        monkeypatch,
    )
    winners = [version for version, outcome in outcomes if outcome == "won"]
    assert sorted(outcome for _, outcome in outcomes) == ["conflict"] * (WORKERS - 1) + ["won"]
    assert local_registry.read_channel("birds", "stable").pointer.version == winners[0]

    # promote() across processes: same baseline, exactly one wins as well
    baseline = winners[0]
    others = [version for version in versions if version != baseline]
    outcomes = run_competing_processes(
        _workers.promote_worker,
        [(str(local_registry.root), "birds", "stable", version, baseline) for version in others],
        monkeypatch,
    )
    winners = [version for version, outcome in outcomes if outcome == "won"]
    assert len(winners) == 1
    assert local_registry.read_channel("birds", "stable").pointer.version == winners[0]


# --- JSON records -----------------------------------------------------------------------------------


def test_json_records_with_compare_and_swap(registry: RegistryWriter) -> None:
    key = rollout_key("r-20240101-1")
    assert key == "rollouts/r-20240101-1.json"
    assert registry.get_json(key) is None
    generation = registry.put_json(key, {"state": "running", "wave": 1}, expected_generation=0)
    assert registry.read_json(key) == ({"state": "running", "wave": 1}, generation)
    with pytest.raises(ConflictError):
        registry.put_json(key, {"state": "other"}, expected_generation=0)
    registry.put_json(key, {"state": "done", "wave": 2}, expected_generation=generation)
    with pytest.raises(ConflictError):
        registry.put_json(key, {"state": "stale"}, expected_generation=generation)
    registry.put_json(key, {"state": "forced"})  # unconditional
    assert registry.get_json(key) == {"state": "forced"}
    assert registry.list_json("rollouts") == [key]


@pytest.mark.parametrize(
    "bad_key",
    ["", "/abs.json", "rollouts/../x.json", "models/birds/channels/x.json", "rollouts/with space.json"],
)
def test_json_record_keys_are_checked(registry: RegistryWriter, bad_key: str) -> None:
    with pytest.raises(RegistryError):
        registry.put_json(bad_key, {})


# --- backend specifics ------------------------------------------------------------------------------


def test_a_registry_uri_is_parsed_in_one_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGISTRY_HOME", str(tmp_path))
    assert parse_registry_uri(tmp_path) == LocalLocation(path=tmp_path)
    assert parse_registry_uri(f"file://{tmp_path}") == LocalLocation(path=tmp_path)
    assert parse_registry_uri("$REGISTRY_HOME/registry") == LocalLocation(path=tmp_path / "registry")
    assert parse_registry_uri("~/registry").path == Path.home() / "registry"
    assert parse_registry_uri("gs://edgefleet-models/prod/registry/") == GcsLocation(
        bucket="edgefleet-models", prefix="prod/registry"
    )
    assert parse_registry_uri("gs://edgefleet-models") == GcsLocation(bucket="edgefleet-models")
    with pytest.raises(RegistryError, match="unsupported scheme"):
        parse_registry_uri("s3://bucket")


@pytest.mark.parametrize(
    ("opener", "local_type", "gcs_type"),
    [
        (open_registry_reader, LocalRegistryReader, GcsRegistryReader),
        (open_registry_writer, LocalRegistryWriter, GcsRegistryWriter),
    ],
)
def test_the_openers_pick_the_backend(opener, local_type, gcs_type, tmp_path: Path) -> None:
    assert type(opener(tmp_path)) is local_type
    assert opener(f"file://{tmp_path}").root == tmp_path
    gcs = opener("gs://edgefleet-models/prod/registry")
    assert type(gcs) is gcs_type
    assert (gcs.bucket_name, gcs.prefix, gcs.uri) == (
        "edgefleet-models",
        "prod/registry",
        "gs://edgefleet-models/prod/registry",
    )
    with pytest.raises(RegistryError, match="unsupported scheme"):
        opener("s3://bucket")
    with pytest.raises(RegistryError, match="not a valid GCS bucket name"):
        opener("gs://Bad_Bucket!")


def test_a_reader_cannot_write(tmp_path: Path) -> None:
    reader = open_registry_reader(tmp_path)
    for name in ("publish_version", "promote", "set_channel", "resign_channel", "put_json"):
        assert not hasattr(reader, name)


def test_only_the_writer_creates_the_registry_directory(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="does not exist"):
        open_registry_reader(tmp_path / "new").list_models()
    assert open_registry_writer(tmp_path / "new", create=True).list_models() == []


def test_missing_local_registry_directory_is_named(tmp_path: Path) -> None:
    registry = LocalRegistryReader(tmp_path / "no-such-registry")
    with pytest.raises(RegistryError, match="no-such-registry does not exist") as caught:
        registry.list_models()
    assert "mkdir -p" in caught.value.fix


def test_missing_bucket_is_named_with_how_to_create_it(
    gcs_client: storage.Client, unique_name: str, make_version: VersionFactory
) -> None:
    registry = GcsRegistryWriter(f"no-such-bucket-{unique_name}", client=gcs_client)
    for action in (
        registry.list_models,
        lambda: registry.read_channel("birds", "stable"),
        lambda: registry.publish_version("birds", "1.0.0", make_version("birds", "1.0.0")),
    ):
        with pytest.raises(RegistryError) as caught:
            action()
        assert f"bucket no-such-bucket-{unique_name} does not exist" in caught.value.message
        for how in ("gsutil mb", "pulumi up", "edgefleet local up"):
            assert how in caught.value.fix


def test_failed_publish_removes_what_it_uploaded(
    gcs_registry: GcsRegistryWriter, gcs_client: storage.Client, make_version: VersionFactory
) -> None:
    """An earlier interrupted publish left a different manifest.sig: this publish uploads the model files,
    fails at the signature, and must remove its own uploads (and leave the other object alone)."""
    prefix = f"{gcs_registry.prefix}/models/birds/1.0.0"
    bucket = gcs_client.bucket(gcs_registry.bucket_name)
    bucket.blob(f"{prefix}/{SIGNATURE_FILE}").upload_from_string(b"left over by a crashed publish\n")

    with pytest.raises(ConflictError, match="manifest.sig already exists with other content") as caught:
        gcs_registry.publish_version("birds", "1.0.0", make_version("birds", "1.0.0"))
    assert "gcloud storage rm" in caught.value.fix

    remaining = sorted(blob.name for blob in gcs_client.list_blobs(gcs_registry.bucket_name, prefix=prefix))
    assert remaining == [f"{prefix}/{SIGNATURE_FILE}"]
    assert gcs_registry.list_versions("birds") == []


def test_uploaded_objects_carry_checksums_equal_to_the_local_files(
    gcs_registry: GcsRegistryWriter, gcs_client: storage.Client, make_version: VersionFactory
) -> None:
    source = make_version("birds", "1.0.0")
    gcs_registry.publish_version("birds", "1.0.0", source)
    for path in source.iterdir():
        blob = gcs_client.bucket(gcs_registry.bucket_name).get_blob(
            f"{gcs_registry.prefix}/models/birds/1.0.0/{path.name}"
        )
        assert blob.md5_hash == base64.b64encode(hashlib.md5(path.read_bytes()).digest()).decode()


def test_a_concurrent_identical_publish_of_the_manifest_is_accepted(
    gcs_registry: GcsRegistryWriter, make_version: VersionFactory
) -> None:
    source = make_version("birds", "1.0.0")
    outcomes: queue.Queue[object] = queue.Queue()
    barrier = threading.Barrier(2)

    def publish_once() -> None:
        barrier.wait(JOIN_TIMEOUT_S)
        try:
            outcomes.put(gcs_registry.publish_version("birds", "1.0.0", source).created)
        except ConflictError as error:  # identical content must never conflict
            outcomes.put(error)

    threads = [threading.Thread(target=publish_once) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT_S)
    results = [outcomes.get_nowait() for _ in range(2)]
    assert sorted(results) == [False, True]
    assert gcs_registry.list_versions("birds") == ["1.0.0"]


# --- the emulator precondition fixture itself -------------------------------------------------------


def test_plain_emulator_ignores_preconditions_which_is_why_the_fixture_exists() -> None:
    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    try:
        client = storage.Client(
            client_options={"api_endpoint": f"http://127.0.0.1:{port}"},
            credentials=AnonymousCredentials(),
            project="test",
        )
        bucket = client.create_bucket("plain")
        bucket.blob("x").upload_from_string(b"1", if_generation_match=0)
        bucket.blob("x").upload_from_string(b"2", if_generation_match=0)  # real GCS: 412
        assert bucket.blob("x").download_as_bytes() == b"2"

        enforce_generation_preconditions(server)
        with pytest.raises(google_errors.PreconditionFailed):
            bucket.blob("x").upload_from_string(b"3", if_generation_match=0)
        generation = bucket.get_blob("x").generation
        with pytest.raises(google_errors.PreconditionFailed):
            bucket.blob("x").upload_from_string(b"4", if_generation_match=generation + 1)
        bucket.blob("x").upload_from_string(b"5", if_generation_match=generation)
        with pytest.raises(google_errors.PreconditionFailed):
            bucket.blob("x").delete(if_generation_match=generation)
        assert bucket.blob("x").download_as_bytes() == b"5"
        assert bucket.get_blob("missing") is None  # reads of missing objects stay 404
    finally:
        server.stop()


def test_precondition_enforcement_on_the_session_emulator(
    gcs_client: storage.Client, gcs_bucket: str, gcs_preconditions: GcsEmulator
) -> None:
    bucket = gcs_client.bucket(gcs_bucket)
    blob = bucket.blob(channel_key("birds", "stable"))
    blob.upload_from_string(b"{}", if_generation_match=0)
    with pytest.raises(google_errors.PreconditionFailed):
        bucket.blob(blob.name).upload_from_string(b"{}", if_generation_match=0)
    with pytest.raises(google_errors.PreconditionFailed):
        bucket.blob(blob.name).download_as_bytes(if_generation_match=blob.generation + 1)
    with pytest.raises(google_errors.PreconditionFailed):
        bucket.blob(blob.name).patch(if_metageneration_match=99)
    assert bucket.blob(blob.name).download_as_bytes(if_generation_match=blob.generation) == b"{}"
