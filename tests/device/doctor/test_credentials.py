"""Issue 22, item 3: the device's one credentials path (`credentials_file`), which the service and the rollout's
preflight `doctor` read alike, and what `doctor` says of telemetry.

The preflight runs `edgefleet-agent doctor --config agent.yaml` over SSH through sudo: without the service's
environment (GOOGLE_APPLICATION_CREDENTIALS set there reached the service only, and every pull-capable device
was blocked by a registry check without credentials). Here the doctor runs as a process whose environment has
no Google credentials at all; the GCS emulator stands in for storage.googleapis.com and a local token endpoint
for oauth2.googleapis.com, so the credentials file is seen being used.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from gcs_buckets import temporary_bucket
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from google_credentials import TokenEndpoint, service_account_file, without_google_credentials

from edgefleet.device.agent.config import load_config
from edgefleet.device.doctor import (
    DoctorLimits,
    DoctorReport,
    blocking_failures,
    check_credentials,
    check_registry,
    check_telemetry,
)
from edgefleet.device.registry import open_registry_reader
from edgefleet.kernel.contracts.status import AgentStatus, write_status

AGENT = Path(sys.executable).with_name("edgefleet-agent")
EMAIL = "device-cam-1@edgefleet-test.iam.gserviceaccount.com"


@pytest.fixture
def bare_device(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    without_google_credentials(monkeypatch, tmp_path)


@pytest.fixture
def device_bucket(gcs_emulator, unique_name: str) -> Iterator[str]:
    """A registry bucket on the GCS emulator, made without any credentials (the emulator takes anonymous
    clients): the device's own are the only ones in play."""
    anonymous = storage.Client(project="edgefleet-test", credentials=AnonymousCredentials(),
                               client_options={"api_endpoint": gcs_emulator.endpoint})
    with temporary_bucket(anonymous, f"registry-{unique_name}") as name:
        yield name


@pytest.fixture
def device_credentials(tmp_path: Path) -> Iterator[tuple[TokenEndpoint, Path]]:
    """The device's service-account file, whose token URI is a local token endpoint recording who asked."""
    with TokenEndpoint() as tokens:
        yield tokens, service_account_file(tmp_path / "credentials.json", email=EMAIL, token_uri=tokens.uri)


def write_config(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(f"device_id: cam-1\nmodel: birds\nroot: {tmp_path / 'root'}\ninference:\n  device: cpu\n{extra}")
    return path


def test_the_preflight_doctor_sees_the_credentials_the_service_uses(tmp_path, bare_device, gcs_emulator,
                                                                    device_bucket, device_credentials, monkeypatch):
    tokens, key = device_credentials
    config = write_config(tmp_path, f"credentials_file: {key}\nregistry:\n  uri: gs://{device_bucket}/fleet\n")
    # As the preflight's sudo leaves it: no credentials in the environment; only the network stand-ins.
    env = {**os.environ, "STORAGE_EMULATOR_HOST": gcs_emulator.endpoint}
    shown = subprocess.run([str(AGENT), "doctor", "--config", str(config), "--json"], env=env,
                           capture_output=True, text=True, timeout=300)
    report = DoctorReport.model_validate_json(shown.stdout)
    checks = {check.name: check for check in report.checks}
    assert checks["registry"].status == "ok", checks["registry"]
    assert checks["credentials"].status == "ok" and EMAIL in checks["credentials"].detail
    assert not [check.name for check in blocking_failures(report, tpu_required=False)
                if check.name in ("registry", "credentials")]
    assert EMAIL in tokens.grants  # the doctor used the device's file, not an ambient identity
    doctor_grants = len(tokens.grants)
    # The service's side: the agent's poller opens the registry the same way, with the same file.
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.endpoint)
    service = open_registry_reader(f"gs://{device_bucket}/fleet", credentials_file=load_config(config).credentials_file)
    assert service.read_channel("birds", "stable").pointer is None
    assert tokens.grants[doctor_grants:] == [EMAIL]


def test_a_gs_registry_without_credentials_names_the_credentials_file_fix(tmp_path, bare_device):
    config = load_config(write_config(tmp_path, "registry:\n  uri: gs://edgefleet-nowhere/fleet\n"))

    registry = check_registry(config, DoctorLimits(connect_timeout_s=2))
    credentials = check_credentials(config)

    assert registry.status == "fail" and "credentials_file" in registry.fix
    assert credentials.status == "warn" and "may not share" in credentials.detail


@pytest.mark.parametrize("content", [None, "{not json"])
def test_a_missing_or_damaged_credentials_file_fails_its_check_naming_the_file(tmp_path, bare_device, content):
    path = tmp_path / "credentials.json"
    if content is not None:
        path.write_text(content)
    config = load_config(write_config(tmp_path, f"credentials_file: {path}\ntelemetry:\n  pubsub_project: p1\n"))

    check = check_credentials(config)

    assert check.status == "fail" and str(path) in check.detail and "deploy-agent" in check.fix
    # It blocks nothing by itself: what needs it (a gs:// registry) fails its own check.
    assert blocking_failures(DoctorReport(checks=(check,)), tpu_required=True) == ()


def test_doctor_says_what_the_running_agent_says_of_its_telemetry(tmp_path):
    config = load_config(write_config(tmp_path, "telemetry:\n  pubsub_project: p1\n"))
    now = datetime.now(timezone.utc)
    status = AgentStatus(device_id="cam-1", pid=os.getpid(), state="running", started_at=now, updated_at=now,
                         spool_depth=42, telemetry_state="sink_down",
                         telemetry_error="no Google Cloud credentials to publish telemetry (fix: credentials_file)")
    assert check_telemetry(config).status == "ok"  # no status yet
    write_status(config.status_path, status)

    check = check_telemetry(config)

    assert check.status == "warn" and "sink_down" in check.detail and "42 message(s)" in check.detail
    assert "credentials_file" in check.detail
    assert blocking_failures(DoctorReport(checks=(check,)), tpu_required=True) == ()
    assert json.loads(status.model_dump_json(by_alias=True))["telemetry_state"] == "sink_down"


def test_a_manual_pull_with_the_agent_config_uses_its_credentials_file(tmp_path, bare_device, gcs_emulator,
                                                                      device_bucket, device_credentials, monkeypatch):
    from typer.testing import CliRunner

    from edgefleet.device.cli import app
    from edgefleet.kernel.trust.signatures import generate_keypair, save_public_key

    save_public_key(generate_keypair()[1], tmp_path / "root" / "keys" / "release.pub")
    tokens, key = device_credentials
    config = write_config(tmp_path, f"credentials_file: {key}\n")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.endpoint)
    result = CliRunner().invoke(app, ["pull", "--registry", f"gs://{device_bucket}/fleet", "--model", "birds",
                                      "--channel", "stable", "--config", str(config), "--json"])
    assert "credentials" not in result.output, result.output
    assert tokens.grants == [EMAIL]  # the pull went to the registry as the device's identity
