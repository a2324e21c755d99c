"""IAM conformance: every Google Cloud API method each identity's code calls is allowed by what the Pulumi
program grants that identity, on that resource, and no granted role goes unused.

The code runs for real against the emulators (the official Pub/Sub emulator, gcp-storage-emulator); the calls
are recorded at the clients' transports (`tests.infra.support.iam_conformance.CallRecorder`: a gRPC interceptor on
the Pub/Sub channels, a wrapper of the HTTP session for Cloud Storage). Cloud Monitoring has no emulator: the
monitor writes its metrics to a fake `MetricServiceClient` and the call is recorded at that fake's boundary
(`via` says so). The grants come from the program run under Pulumi's mocks. The table of method -> permission
(with Google's reference for each row) is `tests.infra.support.iam_table`.

Before this issue the monitor's start-up `GetSubscription` (pubsub.subscriptions.get) was granted by nothing
(roles/pubsub.subscriber lacks it): `test_the_monitor_without_pubsub_viewer_is_caught` keeps that finding.
"""

from __future__ import annotations

import hashlib
import platform
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
from google.cloud import pubsub_v1, storage

from edgefleet.device.enrol import file_request
from edgefleet.device.pull import pull_channel_once
from edgefleet.device.registry import GcsRegistryReader
from edgefleet.device.spotcheck.upload import upload_sample
from edgefleet.device.store import ModelStore
from edgefleet.device.store_reader import PUBLIC_KEY_FILE
from edgefleet.device.telemetry.builder import InferenceRecord, TelemetryBuilder
from edgefleet.device.telemetry.config import TelemetryConfig
from edgefleet.device.telemetry.health import read_health
from edgefleet.device.telemetry.sinks import PubSubSink
from edgefleet.device.telemetry.spool import SpoolEntry
from edgefleet.device.trust.device_identity import sign_spot_sample, sign_telemetry
from edgefleet.flows.registry import GcsRegistryWriter
from edgefleet.flows.release.agent import promote_agent, publish_agent
from edgefleet.flows.release.bundle import create_version_dir
from edgefleet.flows.trust.device_key_records import register_device_key
from edgefleet.flows.trust.enrolment_tokens import approve_requests, create_token
from edgefleet.infra.__main__ import build
from edgefleet.infra.policy import iam_bindings
from edgefleet.infra.pools import ENROL_POOL, POOL_IDENTITY
from edgefleet.kernel.contracts import layout
from edgefleet.kernel.contracts.manifest import Quantization, TensorSpec
from edgefleet.kernel.contracts.spotcheck import SpotSample
from edgefleet.kernel.contracts.telemetry import ModelRef, ResultItem
from edgefleet.kernel.trust.signatures import generate_keypair, save_private_key, save_public_key
from edgefleet.local.emulators import GcsEmulator, PubSubEmulator
from edgefleet.local.gcs_preconditions import enforce_generation_preconditions
from edgefleet.monitor.config import CloudMetricsConfig, MonitorConfig
from edgefleet.monitor.service import run_monitor
from tests.infra.support.iam_conformance import VIA_FAKE, VIA_GRPC, VIA_HTTP, ApiCall, CallRecorder, check_conformance
from tests.infra.support.iam_table import METHOD_PERMISSIONS, ROLE_PERMISSIONS
from tests.infra.support.testing import PROJECT, StackRun, run_program, stack_config

IDENTITIES = ("device", "pipeline", "monitor")
# The prefect.yaml deployments whose code each identity block of the recorded run exercises: each must run in its
# identity's work pool (edgefleet.infra.pools), so its worker's credentials are that identity's.
EXERCISED_DEPLOYMENTS = {"pipeline": ("release-model", "rollout", "deploy-agent"), "monitor": ("fleet-monitor",)}
MODEL, CHANNEL = "birds", "stable"
WAIT_S = 60.0
INPUT_SPEC = TensorSpec(name="input", shape=(1, 128, 128, 3), dtype="uint8",
                        quantization=Quantization(scale=0.0078125, zero_point=128))
OUTPUT_SPEC = TensorSpec(name="scores", shape=(1, 3), dtype="uint8",
                         quantization=Quantization(scale=0.00390625, zero_point=0))


class RecordingMetricServiceClient:
    """Stands in for `monitoring_v3.MetricServiceClient` (no emulator exists): records each call at this
    boundary as the API method the real client would send."""

    def __init__(self, recorder: CallRecorder) -> None:
        self.recorder = recorder
        self.requests: list[Any] = []

    def create_time_series(self, request: Any = None, *, name: str | None = None, time_series: Any = None,
                           retry: Any = None, timeout: Any = None, metadata: Any = ()) -> None:
        self.recorder.record_call("google.monitoring.v3.MetricService/CreateTimeSeries", name or "", VIA_FAKE)
        self.requests.append(time_series)


def _wait(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def stack() -> StackRun:
    return run_program(lambda: build(stack_config()))


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch, pubsub_emulator_private: PubSubEmulator,
             gcs_env: GcsEmulator) -> CallRecorder:
    """Transports of this process recording into a fresh recorder; a Pub/Sub emulator of the test's own (the
    program's fixed topic names must not meet other tests' resources)."""
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator_private.host)
    enforce_generation_preconditions(gcs_env)
    recording = CallRecorder()
    monkeypatch.setattr(grpc, "insecure_channel", recording.wrap_grpc_channel_factory(grpc.insecure_channel))
    monkeypatch.setattr(requests.Session, "request",
                        recording.wrap_http_request(requests.Session.request, gcs_env.endpoint))
    return recording


@pytest.fixture
def cloud(recorder: CallRecorder, stack: StackRun) -> Iterator[dict[str, Any]]:
    """The program's topic, subscriptions and bucket, made on the emulators (setup: not recorded)."""
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic = publisher.create_topic(name=publisher.topic_path(PROJECT, layout.TELEMETRY_TOPIC)).name
    dead = publisher.create_topic(name=publisher.topic_path(PROJECT, layout.TELEMETRY_DEAD_LETTER_TOPIC)).name
    subscriber.create_subscription(request={
        "name": subscriber.subscription_path(PROJECT, layout.MONITOR_SUBSCRIPTION), "topic": topic,
        "dead_letter_policy": {"dead_letter_topic": dead, "max_delivery_attempts": 5}})
    client = storage.Client(project=PROJECT)
    bucket_name = stack.outputs["registry_bucket"]
    if client.lookup_bucket(bucket_name) is None:
        client.create_bucket(bucket_name)
    yield {"bucket": bucket_name, "storage": client}
    publisher.transport.close()
    subscriber.close()


def _build(tmp_path: Path, keys: tuple[Any, Path], version: str) -> Any:
    """What the release flow's build/sign tasks hand to `publish`: a signed version directory."""
    from edgefleet.flows.release.version_tasks import BuiltVersion

    private_key, public_file = keys
    files = {"model_cpu.tflite": f"TFL3 {version} ".encode() * 64, "labels.txt": b"a\nb\nc\n"}
    directory = tmp_path / "build" / version
    signed = create_version_dir(directory, files, private_key=private_key, model=MODEL, version=version,
                                input=INPUT_SPEC, outputs=(OUTPUT_SPEC,), source_commit="0123abc")
    return BuiltVersion(str(directory), signed.manifest, signed.manifest_sha256, str(tmp_path / "keys"),
                        str(public_file))


def _run_pipeline(registry: GcsRegistryWriter, tmp_path: Path, keys: tuple[Any, Path]) -> None:
    """The release flow's registry tasks (plan, publish, move channel: their own functions, outside the
    Prefect engine), then what the rollout flow asks of the registry (channel, its record, promotion)."""
    from edgefleet.flows.release.params import ReleaseParams
    from edgefleet.flows.release.version_tasks import move_channel, plan_release, publish
    from edgefleet.flows.rollout.record import RecordStore, RolloutRecord
    from edgefleet.flows.trust.signing_params import SigningParams

    uri = f"gs://{registry.bucket_name}"
    for version in ("1.0.0", "1.0.1"):
        plan = plan_release.fn(ReleaseParams(model=MODEL, registry=uri, version=version, channel=CHANNEL))
        outcome = publish.fn(uri, _build(tmp_path, keys, version))
        signing = SigningParams(key_file=str(tmp_path / "keys" / "release.key"))  # every channel move signs
        move_channel.fn(uri, MODEL, version, CHANNEL, plan.channel_version_before, "release", signing)
    pointer = registry.read_channel(MODEL, CHANNEL).pointer  # rollout: what the channel names
    records = RecordStore(registry, "rollout-1")
    assert records.load() is None
    record = RolloutRecord(rollout_id="rollout-1", model=MODEL, version=pointer.version,
                           manifest_sha256=outcome.result.manifest_sha256, channel=CHANNEL)
    records.save(record)
    records.save(record)  # a later wave: compare-and-swap on the generation just written
    registry.promote(MODEL, pointer.version, "production", by="rollout rollout-1")
    registry.verify_version(MODEL, pointer.version, keys[1])


def _run_agent_release(registry: GcsRegistryWriter, tmp_path: Path, release_key: Any) -> None:
    """`edgefleet registry agent publish` and `promote` (the release key's, the pipeline identity)."""
    from edgefleet.flows.deploy_agent.locks import lock_name
    from tests.device.agent_release import build_wheel

    lock = tmp_path / "locks" / lock_name(f"{sys.version_info[0]}.{sys.version_info[1]}", platform.machine())
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text("# no dependencies\n")
    wheel = build_wheel(tmp_path / "wheels", "1.4.0", "running")
    publish_agent(registry, wheel, "1.4.0", signing_key=release_key, locks=[lock])
    promote_agent(registry, "1.4.0", "stable", signing_key=release_key, by="release", now=datetime.now(UTC))


def _run_device(registry: GcsRegistryReader, tmp_path: Path, public_file: Path, device_key: Any) -> None:
    """The agent's telemetry publisher and a pull-mode round, as on a device."""
    root = tmp_path / "agent-root"
    (root / PUBLIC_KEY_FILE).parent.mkdir(parents=True)
    (root / PUBLIC_KEY_FILE).write_bytes(public_file.read_bytes())
    result = pull_channel_once(registry, ModelStore(root), MODEL, CHANNEL)
    assert result.outcome == "activated", result.reason
    model = ModelRef(name=MODEL, version=result.version, variant="cpu", backend="cpu")
    builder = TelemetryBuilder("every", 60.0, sample_results=True, max_results=3, start_time=time.time())
    drafts = builder.add_inference(InferenceRecord(time.time(), model, 4.2, (ResultItem(id=1, label="b",
                                                                                    score=0.9),)))
    entries = []
    for seq, draft in enumerate(drafts, start=1):
        message = draft.build(seq, device_id="cam-1", health=read_health())
        data = message.to_json_bytes()  # signed by the device's own key, as the agent's spool does
        entries.append(SpoolEntry(seq, data, {**message.attributes(), **sign_telemetry(device_key, data, "cam-1", 1)}))
    config = TelemetryConfig(pubsub_project=PROJECT, pubsub_topic=layout.TELEMETRY_TOPIC, publish_timeout_s=10.0,
                             publish_batch_size=10, publish_batch_latency_s=0.01, reconnect_max_s=1.0,
                             backoff_initial_s=0.1)
    sink = PubSubSink(config)
    try:
        outcome = sink.publish_batch(entries)
    finally:
        sink.close()
    assert outcome.error is None and outcome.acked == [entry.seq for entry in entries]


SPOT_FRAME = "20261207T210000Z-000000000000"


def _run_spot_check(registry: GcsRegistryReader, device_key: Any) -> None:
    """An opted-in device's spot check (issue 25) uploads a sampled frame it signed, create-only under
    spotcheck/cam-1/."""
    image = b"\xff\xd8 a sampled frame"
    record = sign_spot_sample(device_key, SpotSample(
        device_id="cam-1", frame_id=SPOT_FRAME, captured_at=datetime.now(UTC), model=MODEL, model_version="1.0.1",
        share=0.01, image_sha256=hashlib.sha256(image).hexdigest()))
    upload_sample(registry, "cam-1", SPOT_FRAME, image, record.model_dump_json(by_alias=True).encode())


def _run_monitor(recorder: CallRecorder, tmp_path: Path, registry_uri: str,
                 enrolment_public: Path) -> RecordingMetricServiceClient:
    """The fleet monitor (checking signatures against the device keys in the registry, its default) reading
    the telemetry and closing one metrics period (its clock moved on)."""
    metrics = RecordingMetricServiceClient(recorder)
    config = MonitorConfig(project=PROJECT, subscription=layout.MONITOR_SUBSCRIPTION,
                           store_path=tmp_path / "fleet.sqlite", ingest={"batch_max_wait_s": 0.05},
                           cloud_metrics=CloudMetricsConfig(enabled=True, period_s=60.0),
                           identity={"registry": registry_uri, "enrolment_keys": [str(enrolment_public)]})
    offset = [0.0]
    received: list[Any] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run_monitor(config, stop, metrics_client=metrics, on_batch=received.extend,
                        clock=lambda: time.time() + offset[0])
        except BaseException as error:  # noqa: BLE001 - handed to the test thread
            errors.append(error)

    thread = threading.Thread(target=target, name="conformance-monitor", daemon=True)
    thread.start()
    try:
        _wait(lambda: received or errors, "the monitor to ingest the device's telemetry")
        offset[0] += 61.0
        _wait(lambda: metrics.requests or errors, "the monitor to write its metrics")
    finally:
        stop.set()
        thread.join(WAIT_S)
    if errors:
        raise errors[0]
    return metrics


def test_every_call_of_every_identity_is_granted_and_every_grant_is_used(
    recorder: CallRecorder, cloud: dict[str, Any], stack: StackRun, tmp_path: Path
) -> None:
    private_key, public_key = generate_keypair()
    save_private_key(private_key, tmp_path / "keys" / "release.key")
    public_file = save_public_key(public_key, tmp_path / "keys" / "release.pub")
    registry = GcsRegistryWriter(cloud["bucket"], client=cloud["storage"])

    device_key, _ = generate_keypair()
    enrolment, enrolment_public = generate_keypair()  # the fleet enrolment key signs the device key record
    with recorder.as_identity("pipeline"):  # release-model, rollout, deploy-agent: the edgefleet-pipeline pool
        _run_pipeline(registry, tmp_path, (private_key, public_file))
        register_device_key(registry, "cam-1", device_key.public_key(), enrolment_key=enrolment, by="deploy-agent")
        _run_agent_release(registry, tmp_path, private_key)
        token, _ = create_token(registry, "cam-2", enrolment_key=enrolment, now=datetime.now(UTC),
                                lifetime=timedelta(hours=1))
    with recorder.as_identity("device"):
        device_view = GcsRegistryReader(cloud["bucket"], client=storage.Client(project=PROJECT))
        _run_device(device_view, tmp_path, public_file, device_key)
        filed = file_request(device_view, tmp_path / "cam-2-root", "cam-2", str(token))  # edgefleet-agent enrol
        assert not filed.already_filed
        _run_spot_check(device_view, device_key)
    with recorder.as_identity(POOL_IDENTITY[ENROL_POOL]):  # enrol-approve, as the edgefleet-enrol pool's worker
        [approval] = approve_requests(registry, enrolment_key=enrolment, now=datetime.now(UTC))
        assert approval.enrolled, approval.detail
    with recorder.as_identity("monitor"):  # fleet-monitor: the edgefleet-monitor pool
        _run_monitor(recorder, tmp_path, registry.uri,
                     save_public_key(enrolment_public, tmp_path / "keys" / "fleet-enrolment.pub"))

    methods = {(call.identity, call.method, call.via) for call in recorder.calls}
    # What each identity was seen doing, and how (a regression here means the recording broke).
    assert ("device", "google.pubsub.v1.Publisher/Publish", VIA_GRPC) in methods
    assert ("device", "storage.objects.get", VIA_HTTP) in methods
    assert ("pipeline", "storage.objects.insert", VIA_HTTP) in methods
    assert ("pipeline", "storage.objects.insert[overwrite]", VIA_HTTP) in methods
    assert ("monitor", "google.pubsub.v1.Subscriber/GetSubscription", VIA_GRPC) in methods
    assert ("monitor", "google.pubsub.v1.Subscriber/StreamingPull", VIA_GRPC) in methods
    assert ("monitor", "google.monitoring.v3.MetricService/CreateTimeSeries", VIA_FAKE) in methods
    assert ("monitor", "storage.objects.list", VIA_HTTP) in methods  # the device keys
    # ... and only them: every object the monitor touches is under fleet/, which its conditioned grant allows.
    # The device writes only its enrolment request and its spot-check frames, create-only (ifGenerationMatch=0).
    device_writes = {(call.method, call.object_name) for call in recorder.calls
                     if call.identity == "device" and call.method.startswith("storage.objects.insert")}
    assert {method for method, _ in device_writes} == {"storage.objects.insert"}, device_writes
    device_prefixes = ("fleet/enrol-requests/", "spotcheck/cam-1/")
    assert all(name.startswith(device_prefixes) for _, name in device_writes), device_writes
    monitor_objects = {call.object_name for call in recorder.calls
                       if call.identity == "monitor" and call.method.startswith("storage.objects.")}
    assert monitor_objects and all(name.startswith("fleet/") for name in monitor_objects), monitor_objects
    assert {call.identity for call in recorder.calls} == set(IDENTITIES)
    tolerated = {call.method for call in recorder.calls
                 if call.method in METHOD_PERMISSIONS and METHOD_PERMISSIONS[call.method].denial_tolerated}
    assert tolerated <= {"storage.buckets.get"}  # only the storage library's background metadata read

    violations = check_conformance(recorder.calls, iam_bindings(stack.resources), _members(stack))
    assert violations == [], "\n".join(map(str, violations))


def _members(stack: StackRun) -> dict[str, str]:
    return {name: f"serviceAccount:{stack.outputs[f'{name}_service_account']}" for name in IDENTITIES}


# --- the check itself, on recorded calls written out (fast) ------------------------------------------------

SUBSCRIPTION = f"projects/{PROJECT}/subscriptions/{layout.MONITOR_SUBSCRIPTION}"
TOPIC = f"projects/{PROJECT}/topics/{layout.TELEMETRY_TOPIC}"


def _calls_granting_everything(bucket: str) -> list[ApiCall]:
    """One call per grant the program makes: the shape of a full recording."""
    return [
        ApiCall("device", "google.pubsub.v1.Publisher/Publish", TOPIC, VIA_GRPC),
        ApiCall("device", "storage.objects.get", bucket, VIA_HTTP),
        ApiCall("device", "storage.objects.insert", bucket, VIA_HTTP, "fleet/enrol-requests/t1/k1.json"),
        ApiCall("device", "storage.objects.insert", bucket, VIA_HTTP, f"spotcheck/cam-1/{SPOT_FRAME}.jpg"),
        ApiCall("pipeline", "storage.objects.insert[overwrite]", bucket, VIA_HTTP),
        ApiCall("monitor", "google.pubsub.v1.Subscriber/GetSubscription", SUBSCRIPTION, VIA_GRPC),
        ApiCall("monitor", "google.pubsub.v1.Subscriber/StreamingPull", SUBSCRIPTION, VIA_GRPC),
        ApiCall("monitor", "google.monitoring.v3.MetricService/CreateTimeSeries", f"projects/{PROJECT}", VIA_FAKE),
        ApiCall("monitor", "storage.objects.list", bucket, VIA_HTTP, "fleet/devices/"),
    ]


def test_a_full_recording_conforms(stack: StackRun) -> None:
    calls = _calls_granting_everything(stack.outputs["registry_bucket"])
    assert check_conformance(calls, iam_bindings(stack.resources), _members(stack)) == []


def test_the_monitor_without_pubsub_viewer_is_caught(stack: StackRun) -> None:
    """Today's finding: roles/pubsub.subscriber does not include pubsub.subscriptions.get."""
    bindings = [binding for binding in iam_bindings(stack.resources) if binding.role != "roles/pubsub.viewer"]
    calls = _calls_granting_everything(stack.outputs["registry_bucket"])
    [violation] = check_conformance(calls, bindings, _members(stack))
    assert "monitor calls google.pubsub.v1.Subscriber/GetSubscription" in violation.message
    assert "pubsub.subscriptions.get" in violation.message and "roles/pubsub.viewer" in violation.message


def test_a_device_writing_the_registry_is_caught(stack: StackRun) -> None:
    calls = [*_calls_granting_everything(stack.outputs["registry_bucket"]),
             ApiCall("device", "storage.objects.insert", stack.outputs["registry_bucket"], VIA_HTTP)]
    [violation] = check_conformance(calls, iam_bindings(stack.resources), _members(stack))
    assert "device calls storage.objects.insert" in violation.message
    assert "storage.objects.create" in violation.message


def test_a_call_on_another_resource_than_the_granted_one_is_caught(stack: StackRun) -> None:
    calls = [*_calls_granting_everything(stack.outputs["registry_bucket"]),
             ApiCall("device", "google.pubsub.v1.Publisher/Publish",
                     f"projects/{PROJECT}/topics/{layout.TELEMETRY_DEAD_LETTER_TOPIC}", VIA_GRPC)]
    [violation] = check_conformance(calls, iam_bindings(stack.resources), _members(stack))
    assert f"topic {layout.TELEMETRY_DEAD_LETTER_TOPIC}" in violation.message


def test_an_unused_grant_is_caught(stack: StackRun) -> None:
    calls = [call for call in _calls_granting_everything(stack.outputs["registry_bucket"])
             if call.method != "google.monitoring.v3.MetricService/CreateTimeSeries"]
    [violation] = check_conformance(calls, iam_bindings(stack.resources), _members(stack))
    assert "roles/monitoring.metricWriter granted to monitor" in violation.message
    assert "used by no recorded call" in violation.message


@pytest.mark.parametrize("method", [
    "google.cloud.kms.v1.KeyManagementService/AsymmetricSign",  # pointer signing with a KMS release key
    "google.iam.credentials.v1.IAMCredentials/SignBlob",  # a method nobody has put in the table yet
])
def test_a_new_trust_chain_call_fails_naming_the_method(stack: StackRun, method: str) -> None:
    """The hook for the trust-chain work: a newly recorded method fails until the table has its row and the
    program grants a role holding its permission."""
    calls = [*_calls_granting_everything(stack.outputs["registry_bucket"]),
             ApiCall("pipeline", method, f"projects/{PROJECT}/locations/global/keyRings/r/cryptoKeys/k", VIA_GRPC)]
    [violation] = check_conformance(calls, iam_bindings(stack.resources), _members(stack))
    assert method in violation.message


def test_the_monitor_reading_device_public_keys_from_the_registry_needs_a_grant(stack: StackRun) -> None:
    """Trust chain: the monitor reads each device's public key from the registry bucket (by default, issue 20);
    without its read grant there the check fails and says which role."""
    bucket = stack.outputs["registry_bucket"]
    monitor = _members(stack)["monitor"]
    bindings = [binding for binding in iam_bindings(stack.resources)
                if not (binding.member == monitor and binding.role == "roles/storage.objectViewer")]
    calls = [*_calls_granting_everything(bucket),
             ApiCall("monitor", "storage.objects.get", bucket, VIA_HTTP, "fleet/devices/cam-1.json")]
    violations = check_conformance(calls, bindings, _members(stack))
    assert any(f"monitor calls storage.objects.get on bucket {bucket}" in v.message for v in violations)
    assert all("monitor calls storage.objects." in v.message and "roles/storage.objectViewer" in v.message
               for v in violations)
    assert check_conformance(calls, iam_bindings(stack.resources), _members(stack)) == []


def test_every_table_row_names_its_source_and_every_granted_role_is_described(stack: StackRun) -> None:
    assert all(row.source.startswith("https://cloud.google.com/") for row in METHOD_PERMISSIONS.values())
    fleet = set(_members(stack).values())
    granted = {binding.role for binding in iam_bindings(stack.resources) if binding.member in fleet}
    assert granted <= set(ROLE_PERMISSIONS)


def test_the_program_grants_exactly_the_fleet_grants_table(stack: StackRun) -> None:
    """`edgefleet cloud check` looks for FLEET_GRANTS on the real project: the program must make exactly them."""
    from edgefleet.infra.names import FLEET_GRANTS

    targets = {"telemetry_topic": layout.TELEMETRY_TOPIC, "monitor_subscription": layout.MONITOR_SUBSCRIPTION,
               "registry_bucket": stack.outputs["registry_bucket"], "project": PROJECT}
    members = _members(stack)
    expected = {(members[grant.identity], grant.role, targets[grant.on]) for grant in FLEET_GRANTS}
    granted = {(binding.member, binding.role, binding.target) for binding in iam_bindings(stack.resources)
               if binding.member in members.values()}
    assert granted == expected


@pytest.mark.parametrize(("method", "object_name"), [
    ("storage.objects.get", "models/birds/1.0.0/model_cpu.tflite"),  # a model
    ("storage.objects.get", "models/birds/channels/stable.json"),  # a channel pointer
    ("storage.objects.list", ""),  # the whole bucket: a listing is checked against the bucket
    ("storage.objects.list", "models/"),
    ("storage.objects.get", "fleetx/devices/cam-1.json"),  # a prefix that only looks like fleet/
])
def test_the_monitor_reading_outside_the_fleet_records_is_caught(stack: StackRun, method: str,
                                                                  object_name: str) -> None:
    """Issue 22 item 5: the monitor's registry grant is conditioned on fleet/ (device keys, revocations)."""
    bucket = stack.outputs["registry_bucket"]
    calls = [*_calls_granting_everything(bucket), ApiCall("monitor", method, bucket, VIA_HTTP, object_name)]
    [violation] = check_conformance(calls, iam_bindings(stack.resources), _members(stack))
    what = "prefix" if method == "storage.objects.list" else "object"
    assert f"monitor calls {method} on bucket {bucket} ({what} {object_name!r})" in violation.message


@pytest.mark.parametrize(("method", "object_name"), [
    ("storage.objects.insert", "fleet/devices/cam-1.json"),  # its own key record: only the enrolment key writes it
    ("storage.objects.insert", "fleet/enrol-tokens/t1.json"),  # planting a token
    ("storage.objects.insert", "models/birds/channels/stable.json"),
    ("storage.objects.insert", "fleet/enrol-requestsX/t1/k1.json"),  # a prefix that only looks like it
    ("storage.objects.insert[overwrite]", "fleet/enrol-requests/t1/k1.json"),  # replacing a filed request
    ("storage.objects.delete", "fleet/enrol-requests/t1/k1.json"),
    ("storage.objects.insert", "fleet/spotcheck-labels/cam-1.json"),  # labelling its own frames (issue 25)
    ("storage.objects.insert[overwrite]", f"spotcheck/cam-1/{SPOT_FRAME}.jpg"),  # replacing an uploaded frame
    ("storage.objects.insert", "spotcheckX/cam-1/x.jpg"),
    ("storage.objects.delete", f"spotcheck/cam-1/{SPOT_FRAME}.json"),
])
def test_a_device_writing_anything_but_a_new_enrolment_request_is_caught(stack: StackRun, method: str,
                                                                         object_name: str) -> None:
    """Issue 23 item 4: the device's write grant is objectCreator (create only) conditioned on
    fleet/enrol-requests/ (and, issue 25, spotcheck/: the spot check's frames)."""
    bucket = stack.outputs["registry_bucket"]
    calls = [*_calls_granting_everything(bucket), ApiCall("device", method, bucket, VIA_HTTP, object_name)]
    [violation] = check_conformance(calls, iam_bindings(stack.resources), _members(stack))
    assert f"device calls {method} on bucket {bucket}" in violation.message


def test_the_enrol_pool_identity_handles_tokens_and_requests_and_the_pipeline_writes_agent_releases(
        stack: StackRun) -> None:
    """enrol-approve (the edgefleet-enrol pool's identity) reads requests, burns tokens by compare-and-swap and
    writes key records; `registry agent publish/promote` writes agent/ (as the pipeline identity)."""
    from edgefleet.infra.pools import ENROL_POOL, POOL_IDENTITY

    identity = POOL_IDENTITY[ENROL_POOL]
    bucket = stack.outputs["registry_bucket"]
    calls = [*_calls_granting_everything(bucket),
             ApiCall(identity, "storage.objects.list", bucket, VIA_HTTP, "fleet/enrol-requests/"),
             ApiCall(identity, "storage.objects.get", bucket, VIA_HTTP, "fleet/enrol-requests/t1/k1.json"),
             ApiCall(identity, "storage.objects.get", bucket, VIA_HTTP, "fleet/enrol-tokens/t1.json"),
             ApiCall(identity, "storage.objects.insert[overwrite]", bucket, VIA_HTTP, "fleet/enrol-tokens/t1.json"),
             ApiCall(identity, "storage.objects.insert", bucket, VIA_HTTP, "fleet/devices/cam-1.json"),
             ApiCall("pipeline", "storage.objects.insert", bucket, VIA_HTTP, "agent/1.4.0/agent-manifest.json"),
             ApiCall("pipeline", "storage.objects.insert[overwrite]", bucket, VIA_HTTP, "agent/channels/stable.json")]
    assert check_conformance(calls, iam_bindings(stack.resources), _members(stack)) == []


def test_the_device_reads_the_whole_registry_unconditioned(stack: StackRun) -> None:
    bucket = stack.outputs["registry_bucket"]
    calls = [*_calls_granting_everything(bucket),
             ApiCall("device", "storage.objects.get", bucket, VIA_HTTP, "models/birds/1.0.0/model_cpu.tflite"),
             ApiCall("device", "storage.objects.list", bucket, VIA_HTTP, "")]
    assert check_conformance(calls, iam_bindings(stack.resources), _members(stack)) == []


def test_each_recorded_flow_runs_as_the_identity_of_its_work_pool() -> None:
    """Issue 22 item 4: the recorded run attributes each flow's calls to one identity; prefect.yaml must run that
    flow in the pool whose worker holds that identity's credentials."""
    from edgefleet.infra.pools import DEPLOYMENT_IDENTITY

    for identity, deployments in EXERCISED_DEPLOYMENTS.items():
        assert {DEPLOYMENT_IDENTITY[name] for name in deployments} == {identity}


def test_an_uploads_object_name_is_read_from_its_metadata_part() -> None:
    """A multipart upload names its object in the body's JSON part, not in the URL: a conditioned create grant is
    judged on that name."""
    from tests.infra.support.iam_conformance import storage_method

    url = "http://gcs/upload/storage/v1/b/reg/o?uploadType=multipart&ifGenerationMatch=0"
    body = (b'--==0==\r\ncontent-type: application/json; charset=UTF-8\r\n\r\n'
            b'{"name": "fleet/enrol-requests/t1/k\\"1.json", "contentType": "application/json"}\r\n'
            b'--==0==\r\ncontent-type: application/json\r\n\r\n{"name": "not this"}\r\n--==0==--')
    assert storage_method("POST", url, body) == ("storage.objects.insert", "reg", 'fleet/enrol-requests/t1/k"1.json')
    assert storage_method("POST", url.replace("&ifGenerationMatch=0", ""), body)[0] == \
        "storage.objects.insert[overwrite]"
    assert storage_method("POST", url + "&name=a/b", body)[2] == "a/b"
