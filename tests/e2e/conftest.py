"""Fixtures of the browser tests: Debian's headless Chromium, and the local Prefect stack started the way a
user starts it (`edgefleet ui`, as a subprocess, stopped with SIGTERM).

Chromium is driven by Selenium (Debian's chromium-driver): the Prefect UI asks for the API's auth string on its
login page first, and is a JavaScript app, so a page is read once what the test waits for has rendered.
Screenshots and the stack's logs are copied to `test-artifacts/e2e/` at the repository root.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from edgefleet.local.processes import ManagedProcess
from edgefleet.local.ui_settings import AUTH_STRING_FILE

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS_DIR = REPO / "test-artifacts" / "e2e"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser")
WINDOW_SIZE = (1440, 1000)
UI_START_TIMEOUT_S = 300.0
UI_STOP_TIMEOUT_S = 90.0
POLL_S = 0.5
UI_URL_LABEL = "Prefect UI:"


class _PageText(HTMLParser):
    """The visible text of a page, and the `title` of links with a given class (e.g. the deployment list)."""

    def __init__(self, link_class: str | None) -> None:
        super().__init__()
        self.link_class = link_class
        self.chunks: list[str] = []
        self.links: list[str] = []
        self._hidden_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._hidden_depth += 1
        values = dict(attrs)
        if tag == "a" and self.link_class and self.link_class in (values.get("class") or "").split():
            self.links.append(values.get("title") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._hidden_depth:
            self._hidden_depth -= 1

    def handle_data(self, data: str) -> None:
        if not self._hidden_depth and data.strip():
            self.chunks.append(data.strip())


@dataclass(frozen=True)
class Page:
    """A page as Chromium rendered it."""

    url: str
    html: str
    text: str
    links: tuple[str, ...]


def parse_page(url: str, html: str, link_class: str | None = None) -> Page:
    parser = _PageText(link_class)
    parser.feed(html)
    return Page(url, html, " ".join(parser.chunks), tuple(parser.links))


CHROMEDRIVER_CANDIDATES = ("/usr/bin/chromedriver", "chromedriver")
# What this sandboxed machine needs: no sandbox/GPU, and nothing that reaches the network on its own.
SELENIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars")
PAGE_TIMEOUT_S = 60.0


def login_to_prefect_ui(driver: Any, ui_url: str, auth_string: str, timeout_s: float = PAGE_TIMEOUT_S) -> None:
    """Logs the browser in to a Prefect UI whose API requires an auth string, as a user does: the UI's login
    page, the string typed into its password field, Enter (the UI keeps it in the browser's local storage)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as conditions
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{ui_url}/login")
    wait = WebDriverWait(driver, timeout_s)
    field = wait.until(conditions.element_to_be_clickable((By.XPATH, "//input[@type='password']")))
    field.send_keys(auth_string + Keys.ENTER)
    wait.until(lambda d: "/login" not in d.current_url)


@dataclass
class Chromium:
    """Debian's Chromium, headless, under Selenium (the UI asks for the API's auth string: `login` first)."""

    driver: Any

    def login(self, ui_url: str, auth_string: str) -> None:
        login_to_prefect_ui(self.driver, ui_url, auth_string)

    def render(
        self, url: str, ready: Callable[[Page], bool], link_class: str | None = None
    ) -> Page:
        """The page once `ready(page)` holds (the app fetches from the API after loading), or as it is after
        PAGE_TIMEOUT_S (the caller's assertion then says what is missing)."""
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver.set_window_size(*WINDOW_SIZE)
        self.driver.get(url)
        try:
            WebDriverWait(self.driver, PAGE_TIMEOUT_S, poll_frequency=POLL_S).until(
                lambda d: ready(parse_page(url, d.page_source, link_class)))
        except TimeoutException:
            pass
        return parse_page(url, self.driver.page_source, link_class)

    def screenshot(self, url: str, path: Path, window_size: tuple[int, int] = WINDOW_SIZE) -> Path:
        """A PNG of the page (as rendered by `render` when it is the page shown), also copied to test-artifacts."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.driver.current_url != url:
            self.driver.get(url)
        self.driver.set_window_size(*window_size)
        self.driver.save_screenshot(str(path))
        ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, ARTIFACTS_DIR / path.name)
        return path


@pytest.fixture(scope="session")
def chromium() -> Iterator[Chromium]:
    """Headless Chromium under Selenium, or a skip saying how to install it."""
    driver_path = next((found for c in CHROMEDRIVER_CANDIDATES if (found := shutil.which(c))), None)
    executable = next((found for c in CHROMIUM_CANDIDATES if (found := shutil.which(c))), None)
    if driver_path is None or executable is None:
        pytest.skip("Chromium and its driver are not installed (Debian: apt-get install -y chromium "
                    "chromium-driver); the browser tests need them")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = executable
    for flag in SELENIUM_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(PAGE_TIMEOUT_S)
    try:
        yield Chromium(driver)
    finally:
        driver.quit()


@dataclass
class UiProcess:
    """`edgefleet ui` running as a subprocess; its stdout and stderr go to `log_path`."""

    process: subprocess.Popen
    ui_url: str
    home: Path
    log_path: Path

    @property
    def api_url(self) -> str:
        return f"{self.ui_url}/api"

    @property
    def auth_string(self) -> str:
        """What the stack's API requires (`edgefleet ui` keeps it in <PREFECT_HOME>/api-auth-string)."""
        return (self.home / AUTH_STRING_FILE).read_text().strip()

    def leftover_pids(self) -> list[int]:
        """Live processes of this stack (server, worker, flow runs): those with its PREFECT_HOME."""
        return processes_with_home(self.home)


def processes_with_home(home: Path) -> list[int]:
    """PIDs of live processes whose environment has PREFECT_HOME=home (server, worker, flow runs)."""
    wanted = f"PREFECT_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if wanted in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


@pytest.fixture
def prefect_processes() -> Callable[[Path], list[int]]:
    """`processes_with_home`: finds the live processes of a Prefect stack by its PREFECT_HOME."""
    return processes_with_home


def ui_url_in(log_path: Path) -> str | None:
    """The UI's address once a stack (`edgefleet ui`, the sandbox) has printed it to `log_path`."""
    for line in log_path.read_text(errors="replace").splitlines():
        if line.startswith(UI_URL_LABEL):
            return line.removeprefix(UI_URL_LABEL).strip()
    return None


def start_printing_ui_url(name: str, argv: list[str], log_path: Path, timeout_s: float, **options) -> tuple[
        ManagedProcess, str]:
    """Starts a stack as a user does (a session of its own, from the checkout) and waits for its UI address."""
    process = ManagedProcess(name, argv, log_path=log_path, cwd=REPO, env={**os.environ, "COLUMNS": "200"},
                             **options).start()
    try:
        process.wait_ready(lambda: ui_url_in(log_path) is not None, timeout_s, POLL_S,
                           waiting_for=f"a line {UI_URL_LABEL} URL")
    except BaseException:
        process.stop()
        raise
    return process, ui_url_in(log_path)


@pytest.fixture(scope="module")
def ui_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiProcess]:
    """`edgefleet ui --port 0 --no-schedules` with a temporary PREFECT_HOME, ready (worker polling).

    The scheduler is off so that no scheduled deployment starts runs of its own during the test.
    """
    directory = tmp_path_factory.mktemp("edgefleet-ui")
    home = directory / "prefect-home"
    log_path = directory / "ui.log"
    argv = [sys.executable, "-m", "edgefleet.cli", "ui", "--port", "0", "--prefect-home", str(home),
            "--project-dir", str(REPO), "--no-schedules"]
    process: ManagedProcess | None = None
    try:
        process, ui_url = start_printing_ui_url("`edgefleet ui`", argv, log_path, UI_START_TIMEOUT_S,
                                                stop_timeout_s=UI_STOP_TIMEOUT_S)
        yield UiProcess(process.popen, ui_url, home, log_path)
    finally:
        if process is not None:
            process.stop()
        for pid in processes_with_home(home):  # what the stop left (nothing, when `edgefleet ui` works)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        logs = ARTIFACTS_DIR / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for path in (log_path, *sorted((home / "logs").glob("*.log"))):
            if path.is_file():
                shutil.copy2(path, logs / path.name)
