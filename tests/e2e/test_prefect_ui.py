"""The Prefect UI as a user meets it: `edgefleet ui` starts the server, the process worker and the deployments
of prefect.yaml; real headless Chromium reads the pages; a `release-model` run triggered through the API runs
on the worker (tiny real training, a registry and signing key in a temporary directory) and its release
report shows up as an artifact in the API and in the UI. Screenshots land in test-artifacts/e2e/.
"""

from __future__ import annotations

import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml

from edgefleet.device.registry import open_registry_reader
from edgefleet.device.trust.version_bundle import verify_version_dir
from edgefleet.flows.release.report import artifact_key
from edgefleet.flows.trust.release_key import public_key_path
from edgefleet.kernel.contracts.layout import version_prefix

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
RELEASE_DEPLOYMENT = "release-model/release-model"
MODEL = "shapes"
CHANNEL = "canary"
RUN_TIMEOUT_S = 300.0
RUN_POLL_S = 1.0
STOP_TIMEOUT_S = 90.0
HEALTH_TIMEOUT_S = 2.0


class ReleaseRun(NamedTuple):
    flow_run: Any
    registry: Path
    dev_key: Path


def _prefect_yaml() -> dict[str, Any]:
    return yaml.safe_load((REPO / "prefect.yaml").read_text())


def _api(ui_stack):
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    return temporary_settings(updates={PREFECT_API_URL: ui_stack.api_url,
                                       PREFECT_API_AUTH_STRING: ui_stack.auth_string})


@pytest.fixture(scope="module")
def release_run(ui_stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReleaseRun]:
    """A `release-model` run created through the Prefect API and waited for: tiny, CPU only, all in tmp."""
    from prefect.deployments import run_deployment

    root = tmp_path_factory.mktemp("release")
    registry, dev_key = root / "registry", root / "keys" / "dev-release.key"
    registry.mkdir()
    params = {
        "model": MODEL,
        "dataset": {"source": "demo", "demo_samples_per_class": 20, "demo_image_size": 32},
        "training": {"input_size": 32, "epochs": 1, "small_cnn_filters": [8, 16]},
        "quantization": {"representative_samples": 16},
        "compile": {"mode": "off"},
        # One epoch on 80 images: the accuracy gate is not what this test is about.
        "gates": {"max_accuracy_drop_points": 100.0},
        "registry": str(registry),
        "channel": CHANNEL,
        "signing": {"dev_key_file": str(dev_key)},
        "latency_runs": 2,
        "work_dir": str(root / "work"),
        "source_commit": "e2e0000000000000",
    }
    with _api(ui_stack):
        flow_run = run_deployment(
            RELEASE_DEPLOYMENT, parameters={"params": params}, timeout=RUN_TIMEOUT_S, poll_interval=RUN_POLL_S
        )
    yield ReleaseRun(flow_run, registry, dev_key)


def test_deployments_page_lists_every_deployment(ui_stack, chromium, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client

    expected = {deployment["name"] for deployment in _prefect_yaml()["deployments"]}
    assert "release-model" in expected
    with _api(ui_stack), get_client(sync_client=True) as client:
        registered = {deployment.name for deployment in client.read_deployments()}
    assert registered == expected

    url = f"{ui_stack.ui_url}/deployments"
    chromium.login(ui_stack.ui_url, ui_stack.auth_string)  # the API requires its auth string: the UI asks once
    page = chromium.render(url, lambda p: expected <= set(p.links), link_class="deployment-list__name")
    assert set(page.links) == expected, page.text
    assert f"{len(expected)} Deployment" in page.text
    chromium.screenshot(url, tmp_path / "deployments.png")


def _field_titles(model: type) -> set[str]:
    # How Prefect's parameter form labels a pydantic field: its name, title-cased.
    return {name.replace("_", " ").title() for name in model.model_fields}


def test_release_model_run_form_shows_the_parameters(ui_stack, chromium, tmp_path: Path) -> None:
    """The `release-model` deployment's "Run" page renders ReleaseParams as a form, nested sections included.

    `compile` is a discriminated union (local | ssh | off): Prefect's form shows such a field as a JSON editor
    holding the deployment's value, which the server validates against the union when the run is created.
    """
    from prefect.client.orchestration import get_client

    from edgefleet.flows.release.params import DatasetParams, ReleaseParams, TrainingParams

    with _api(ui_stack), get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(RELEASE_DEPLOYMENT)
    expected = set().union(*map(_field_titles, (ReleaseParams, DatasetParams, TrainingParams)))
    expected.add('"mode" : "local"')  # the compile union's JSON editor, holding the deployment's value
    expected.add(ReleaseParams.model_fields["dataset"].description)

    url = f"{ui_stack.ui_url}/deployments/deployment/{deployment.id}/run"
    chromium.login(ui_stack.ui_url, ui_stack.auth_string)
    page = chromium.render(url, lambda p: all(title in p.text for title in expected))
    assert {title for title in expected if title not in page.text} == set()
    chromium.screenshot(url, tmp_path / "release-model-run-form.png", window_size=(1440, 2400))


def test_release_run_completes_on_the_worker(ui_stack, release_run: ReleaseRun) -> None:
    flow_run = release_run.flow_run
    pools = {deployment["work_pool"]["name"] for deployment in _prefect_yaml()["deployments"]
             if deployment["name"] == "release-model"}
    assert flow_run.state.is_completed(), flow_run.state
    assert flow_run.work_pool_name in pools
    # The process worker records the PID of the flow run's process: it ran there, not in this test.
    assert flow_run.infrastructure_pid

    # The worker's process published a signed version with the development key it created in tmp.
    pointer = open_registry_reader(release_run.registry).read_channel(MODEL, CHANNEL).pointer
    public_key = public_key_path(release_run.dev_key)
    assert release_run.dev_key.is_file() and public_key.is_file()
    manifest = verify_version_dir(
        release_run.registry / version_prefix(MODEL, pointer.version), public_key, model=MODEL,
        version=pointer.version,
    )
    assert manifest.source_commit == "e2e0000000000000"
    assert "release-model" in pointer.updated_by and str(flow_run.id) in pointer.updated_by


def test_release_report_artifact_in_api_and_ui(
    ui_stack, chromium, release_run: ReleaseRun, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    flow_run = release_run.flow_run
    version = open_registry_reader(release_run.registry).read_channel(MODEL, CHANNEL).pointer.version
    heading = f"{MODEL} {version}: PUBLISHED"
    with _api(ui_stack), get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id]))
        )
    by_key = {artifact.key: artifact for artifact in artifacts}
    report = by_key.get(artifact_key(MODEL, "report"))
    assert report is not None, sorted(str(key) for key in by_key)
    assert report.type == "markdown"
    assert heading in str(report.data) and str(release_run.registry) in str(report.data)

    artifact_url = f"{ui_stack.ui_url}/artifacts/artifact/{report.id}"
    chromium.login(ui_stack.ui_url, ui_stack.auth_string)
    page = chromium.render(artifact_url, lambda p: heading in p.text)
    assert heading in page.text and str(release_run.registry) in page.text
    chromium.screenshot(artifact_url, tmp_path / "release-report-artifact.png")

    listing = chromium.render(f"{ui_stack.ui_url}/artifacts", lambda p: report.key in p.text)
    assert report.key in listing.text

    run_url = f"{ui_stack.ui_url}/runs/flow-run/{flow_run.id}"
    run_page = chromium.render(run_url, lambda p: "Completed" in p.text)
    assert flow_run.name in run_page.text and "Completed" in run_page.text
    chromium.screenshot(run_url, tmp_path / "release-flow-run.png")


def test_sigterm_stops_server_worker_and_runs(ui_stack) -> None:
    """Last: `edgefleet ui` stops on SIGTERM, exits 0, and leaves no Prefect process of its own behind."""
    assert ui_stack.leftover_pids(), "the stack's processes should be running before the stop"
    ui_stack.process.send_signal(signal.SIGTERM)
    try:
        status = ui_stack.process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`edgefleet ui` did not stop within {STOP_TIMEOUT_S:.0f} s of SIGTERM")
    assert status == 0, ui_stack.log_path.read_text()
    assert "Stopped." in ui_stack.log_path.read_text()
    assert ui_stack.leftover_pids() == []
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{ui_stack.api_url}/health", timeout=HEALTH_TIMEOUT_S)
