"""`make sandbox` as a user drives it: the sandbox started as a subprocess (`python -m edgefleet.local.sandbox
up`), a real headless Chromium driven by Selenium (Debian's chromium-driver) submits `release-model` from
the deployment's run form (typing a field), then `rollout` the same way; both run on the sandbox's worker. Then every
simulated device runs the new version, the rollout's canary verdict artifact is there (and renders), and
Ctrl-C stops every process of the sandbox. Screenshots go to test-artifacts/e2e/.

Lean on purpose (the CI budget): two devices, one release with the sandbox's defaults, one rollout.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edgefleet.local.ui_settings import AUTH_STRING_FILE

from .conftest import ARTIFACTS_DIR, login_to_prefect_ui, processes_with_home, start_printing_ui_url

# The module's sandbox starts in the first test's setup (up to START_TIMEOUT_S), then a release and a rollout run
# through the UI: past the suite's 600 s hang guard at load average 40, so 1,800 s here.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
DEVICES = 2
MODEL = "shapes"
START_TIMEOUT_S = 420.0
RUN_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 120.0
PAGE_TIMEOUT_S = 60.0
SUBMIT_ATTEMPTS = 3  # a Submit the server answered 503 (its SQLite busy) is clicked again, as a person would
_SERVER_ERROR_TOAST = "Something went wrong"
POLL_S = 1.0
CHROMEDRIVER_CANDIDATES = ("/usr/bin/chromedriver", "chromedriver")
CHROMIUM = "/usr/bin/chromium"
WINDOW = "1440,1100"
SOURCE_COMMIT = "e2e5a4db0c"  # typed into the release form, found in the published manifest


@dataclass
class SandboxProcess:
    process: subprocess.Popen
    workdir: Path
    ui_url: str
    stdout_path: Path

    @property
    def api_url(self) -> str:
        return f"{self.ui_url}/api"

    @property
    def auth_string(self) -> str:
        """What the sandbox's API requires (its summary names the file)."""
        return (self.workdir / "prefect" / AUTH_STRING_FILE).read_text().strip()


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    """The sandbox, started as `make sandbox` starts it (own workdir, any free port, no schedules)."""
    workdir = tmp_path_factory.mktemp("sandbox")
    stdout_path = workdir.parent / f"{workdir.name}.out"
    argv = [sys.executable, "-m", "edgefleet.local.sandbox", "up", "--workdir", str(workdir), "--port", "0",
            "--devices", str(DEVICES), "--no-schedules"]
    process = None
    try:
        # Stopped as a terminal's Ctrl-C stops it: SIGINT to the group (SIGKILL after STOP_TIMEOUT_S).
        process, ui_url = start_printing_ui_url("sandbox", argv, stdout_path, START_TIMEOUT_S,
                                                stop_signal=signal.SIGINT, stop_timeout_s=STOP_TIMEOUT_S)
        yield SandboxProcess(process.popen, workdir, ui_url, stdout_path)
    finally:
        if process is not None:
            process.stop()
        from edgefleet.local.sandbox import down

        down(workdir)  # whatever a failed run left
        logs = ARTIFACTS_DIR / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for path in (stdout_path, *sorted((workdir / "prefect" / "logs").glob("*.log"))):
            if path.is_file():
                shutil.copy2(path, logs / f"sandbox-{path.name}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium under Selenium, or a skip saying what to install."""
    driver_path = next((found for c in CHROMEDRIVER_CANDIDATES if (found := shutil.which(c))), None)
    if driver_path is None or not Path(CHROMIUM).exists():
        pytest.skip("Chromium and its driver are not installed (Debian: apt-get install -y chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console errors, for a failure's message
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--window-size={WINDOW}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(PAGE_TIMEOUT_S)
    try:
        yield driver
    finally:
        driver.quit()


def _screenshot(browser: Any, name: str) -> None:
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS_DIR / name))


def _client(sandbox: SandboxProcess):
    from prefect.client.orchestration import SyncPrefectClient

    return SyncPrefectClient(sandbox.api_url, auth_string=sandbox.auth_string)


def _run_ids(sandbox: SandboxProcess, deployment_id: Any) -> set[str]:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with _client(sandbox) as client:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))
    return {str(run.id) for run in runs}


def _fill_text(browser: Any, label: str, value: str) -> None:
    """Types `value` into the form's optional text field `label` (switching its str/None choice to str)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    section = (f"//*[normalize-space()='{label} (Optional)']"
               "/ancestor::*[.//button[normalize-space()='str']][1]")
    browser.find_element(By.XPATH, f"{section}//button[normalize-space()='str']").click()
    # The field re-renders as a text input: find it again once it is there.
    wait = WebDriverWait(browser, PAGE_TIMEOUT_S,
                         ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))
    field = wait.until(lambda b: b.find_element(By.XPATH, f"({section}//input | {section}//textarea)[1]"))
    field.send_keys(value)
    wait.until(lambda b: b.find_element(By.XPATH, f"({section}//input | {section}//textarea)[1]")
               .get_attribute("value") == value)


TOAST_WAIT_S = 20.0


def _wait_for_toasts_to_go(browser: Any) -> None:
    """Waits for the UI's info toasts to go; one still there after TOAST_WAIT_S is closed, as a person closes it.
    (Seen at load average 20: a toast of the previous form stayed over the Submit button past a minute, the
    browser's timers starved.)"""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as conditions
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(browser, TOAST_WAIT_S).until(
            conditions.invisibility_of_element_located((By.CSS_SELECTOR, ".p-toast__info")))
    except TimeoutException:
        browser.execute_script("document.querySelectorAll('.p-toast__info').forEach(t => t.remove())")


def _submit_run_form(browser: Any, sandbox: SandboxProcess, deployment: str, screenshot: str,
                     text_fields: dict[str, str] | None = None, ready_label: str = "Validate parameters") -> str:
    """Opens the deployment's run form in the UI, waits until the parameters' form shows `ready_label` (the
    form renders after the page: a submit before it sends no parameters and is refused by the form), fills
    `text_fields` (label -> value), submits it, returns the new flow run's id."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as conditions
    from selenium.webdriver.support.ui import WebDriverWait

    with _client(sandbox) as client:
        found = client.read_deployment_by_name(f"{deployment}/{deployment}")
    before = _run_ids(sandbox, found.id)
    browser.get(f"{sandbox.ui_url}/deployments/deployment/{found.id}/run")
    wait = WebDriverWait(browser, PAGE_TIMEOUT_S)
    wait.until(conditions.element_to_be_clickable((By.XPATH, "//button[@type='submit']")))
    wait.until(conditions.presence_of_element_located((By.XPATH, f"//*[normalize-space()='{ready_label}']")))
    for label, value in (text_fields or {}).items():
        _fill_text(browser, label, value)
    submit = wait.until(conditions.element_to_be_clickable((By.XPATH, "//button[@type='submit']")))
    assert submit.text.strip() == "Submit"
    browser.execute_script("arguments[0].scrollIntoView()", submit)
    _screenshot(browser, screenshot)
    console: list[str] = []
    for _attempt in range(SUBMIT_ATTEMPTS):
        # A toast (the 503 one below, or any other) sits over the Submit button for a few seconds: a person
        # waits for it to go; clicking through it was refused as intercepted on a loaded machine.
        _wait_for_toasts_to_go(browser)
        submit.click()
        # The UI creates the run and goes back to the deployment's runs, or shows its error toast.
        try:
            wait.until(lambda b: "tab=Runs" in b.current_url or _SERVER_ERROR_TOAST in b.find_element(
                By.TAG_NAME, "body").text)
        except TimeoutException:
            break
        if "tab=Runs" in browser.current_url:
            break
        console += [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        # Prefect's server answers 503 when its SQLite is busy (SQLITE_BUSY: the request was rolled back, and
        # Prefect's Python client retries it); its UI shows the toast instead. A person clicks Submit again.
        if not any("create_flow_run" in line and "503" in line for line in console) or \
                _run_ids(sandbox, found.id) - before:
            break
    if "tab=Runs" not in browser.current_url:
        _screenshot(browser, f"failed-{screenshot}")
        body = browser.find_element(By.TAG_NAME, "body").text
        console += [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        raise AssertionError(f"the {deployment} form was not accepted; the page says:\n{body[-1500:]}\n"
                             f"browser console errors:\n" + "\n".join(console[-20:]))
    new = wait.until(lambda _: _run_ids(sandbox, found.id) - before)
    assert len(new) == 1, new
    return new.pop()


def _wait_for_run(sandbox: SandboxProcess, run_id: str) -> Any:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    with _client(sandbox) as client:
        while True:
            run = client.read_flow_run(run_id)
            if run.state is not None and run.state.is_final():
                return run
            assert sandbox.process.poll() is None, sandbox.stdout_path.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, f"flow run {run.name} not finished after {RUN_TIMEOUT_S:.0f} s"
            time.sleep(POLL_S)


def test_release_and_rollout_from_the_ui_reach_every_device(sandbox: SandboxProcess, browser: Any) -> None:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from edgefleet.device.registry import open_registry_reader
    from edgefleet.device.store import ModelStore

    login_to_prefect_ui(browser, sandbox.ui_url, sandbox.auth_string)  # the UI asks for the API's auth string
    release_id = _submit_run_form(browser, sandbox, "release-model", "sandbox-release-form.png",
                                  {"Source Commit": SOURCE_COMMIT})
    release = _wait_for_run(sandbox, release_id)
    assert release.state.is_completed(), release.state
    assert release.work_pool_name == "edgefleet-process" and release.infrastructure_pid  # ran on the worker
    assert release.parameters["params"]["source_commit"] == SOURCE_COMMIT  # what was typed into the form
    registry = sandbox.workdir / "registry"
    version = open_registry_reader(registry).read_channel(MODEL, "canary").pointer.version
    manifest = json.loads((registry / "models" / MODEL / version / "manifest.json").read_text())
    assert manifest["source_commit"] == SOURCE_COMMIT

    rollout_id = _submit_run_form(browser, sandbox, "rollout", "sandbox-rollout-form.png", ready_label="Inventory")
    rollout = _wait_for_run(sandbox, rollout_id)
    assert rollout.state.is_completed(), rollout.state
    _show(browser, f"{sandbox.ui_url}/runs/flow-run/{rollout_id}", "Completed", "sandbox-rollout-run.png")

    roots = sorted((sandbox.workdir / "fleet").glob("sim-*/agent-root"))
    assert len(roots) == DEVICES
    for root in roots:  # deploy-agent's layout: the keyring in the root-owned config dir, not the agent root
        assert not (root / "keys" / "release.pub").exists() and not (root / "keys" / "release.d").exists()
        ring = sandbox.workdir / "opt" / "etc" / root.parent.name / "keys" / "release.d"
        assert [key.suffix for key in ring.iterdir()] == [".pub"]  # one release key, named by its key id
    assert {root.parent.name: ModelStore(root).pointer(MODEL, "current") for root in roots} == {
        f"sim-{n}": version for n in range(1, DEVICES + 1)}

    key = "rollout-" + f"{MODEL}-{version}".replace(".", "-") + "-canary"
    with _client(sandbox) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    assert artifacts, f"no artifact {key}"
    verdict = artifacts[0]
    assert verdict.type == "table" and str(verdict.flow_run_id) == rollout_id
    assert "latency" in json.dumps(verdict.data)

    _show(browser, f"{sandbox.ui_url}/artifacts/artifact/{verdict.id}", "PASS", "sandbox-canary-verdict.png")

    # The fleet overview page the summary points at: the new version on every device, drawn.
    page = sandbox.workdir / "fleet-overview.html"
    subprocess.run([sys.executable, "-m", "edgefleet.cli", "fleet", "status", "--config",
                    str(sandbox.workdir / "monitor.yaml"), "--html", str(page)], check=True, capture_output=True)
    assert f'data-version="{version}"' in page.read_text()
    _show(browser, page.as_uri(), "Top-1 score distribution", "sandbox-fleet-overview.png")


def _show(browser: Any, url: str, text: str, screenshot: str) -> None:
    """Opens `url`, waits until the page shows `text`, saves a screenshot."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    WebDriverWait(browser, PAGE_TIMEOUT_S).until(lambda b: text in b.find_element(By.TAG_NAME, "body").text)
    _screenshot(browser, screenshot)


def test_ctrl_c_stops_every_part_of_the_sandbox(sandbox: SandboxProcess) -> None:
    """Last: Ctrl-C (SIGINT to the process group, as a terminal sends it) stops the sandbox and all it started."""
    state = json.loads((sandbox.workdir / "sandbox.json").read_text())
    recorded = [*state["pids"].values(), *state["groups"].values()]
    agents = [int(Path(p).read_text()) for p in state["agent_pid_files"] if Path(p).exists()]
    assert len(agents) == DEVICES and all(_alive(pid) for pid in recorded + agents)
    os.killpg(sandbox.process.pid, signal.SIGINT)
    assert sandbox.process.wait(timeout=STOP_TIMEOUT_S) == 0, sandbox.stdout_path.read_text(errors="replace")[-3000:]
    assert "Stopped." in sandbox.stdout_path.read_text()
    assert [pid for pid in recorded + agents if _alive(pid)] == []
    assert processes_with_home(sandbox.workdir / "prefect") == []
    assert not (sandbox.workdir / "sandbox.json").exists()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for every purpose but its parent's wait().
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
