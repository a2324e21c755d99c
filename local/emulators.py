"""Start and stop the official Pub/Sub emulator and the GCS emulator on loopback ports.

Used by the tests' fixtures, `make demo` and `edgefleet local up`: the same code starts the same stack.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from edgefleet.kernel.errors import EdgefleetError

log = logging.getLogger(__name__)

PUBSUB_EMULATOR_CANDIDATES = (
    "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator",
    "/usr/share/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator",
    "/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator",
)
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    """Returns a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def find_pubsub_emulator() -> Path:
    """Returns the path of the official Pub/Sub emulator launcher.

    Raises:
        EdgefleetError: when the Google Cloud SDK's pubsub-emulator component is not installed.
    """
    override = os.environ.get("EDGEFLEET_PUBSUB_EMULATOR")
    candidates = [override] if override else []
    candidates += list(PUBSUB_EMULATOR_CANDIDATES)
    gcloud = shutil.which("gcloud")
    if gcloud:
        sdk_root = Path(gcloud).resolve().parent.parent
        candidates.append(str(sdk_root / "platform/pubsub-emulator/bin/cloud-pubsub-emulator"))
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise EdgefleetError(
        "The Pub/Sub emulator (cloud-pubsub-emulator) was not found",
        "install the Google Cloud SDK and run `gcloud components install pubsub-emulator` (Debian: apt-get "
        "install google-cloud-cli-pubsub-emulator), or set EDGEFLEET_PUBSUB_EMULATOR to its launcher",
    )


def _wait_for_http(url: str, timeout_s: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise EdgefleetError(f"emulator exited with status {process.returncode} before it was ready ({url})",
                                 "look at its log for the cause (port in use? Java missing?)")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status < 500:
                    return
        except urllib.error.HTTPError as error:
            if error.code < 500:
                return
            last_error = error
        except OSError as error:
            last_error = error
        time.sleep(0.1)
    raise EdgefleetError(f"emulator at {url} not ready after {timeout_s:.0f} s ({last_error})",
                         "check that the port is free and the emulator starts by hand")


@dataclass
class PubSubEmulator:
    """The official Pub/Sub emulator as a child process (its PID is the JVM's).

    Use as a context manager, or call `start()` and `stop()`. `host` is what clients put in
    `PUBSUB_EMULATOR_HOST`.
    """

    port: int = 0
    project: str = "edgefleet-local"
    log_path: Path | None = None
    process: subprocess.Popen | None = field(default=None, init=False, repr=False)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> PubSubEmulator:
        if not self.port:
            self.port = free_port()
        launcher = find_pubsub_emulator()
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            # A new session so stop() can signal the launcher script and the JVM together.
            self.process = subprocess.Popen(
                [str(launcher), "--host=127.0.0.1", f"--port={self.port}"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        finally:
            if out is not subprocess.DEVNULL:
                out.close()  # the child has its own copy
        try:
            _wait_for_http(f"http://{self.host}/", READY_TIMEOUT_S, self.process)
        except BaseException:
            self.stop()
            raise
        log.info("Pub/Sub emulator ready on %s (pid %d)", self.host, self.process.pid)
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except ProcessLookupError:
            pass

    def restart(self) -> None:
        """Stops and starts again on the same port (the emulator keeps no state across this)."""
        self.stop()
        self.start()

    def __enter__(self) -> PubSubEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class GcsEmulator:
    """`gcp-storage-emulator` served in-process from a background thread, in memory.

    Clients use `STORAGE_EMULATOR_HOST` = `endpoint` and anonymous credentials. The emulator ignores
    generation preconditions; `start()` makes it enforce them as GCS does (`edgefleet.local.gcs_preconditions`).
    """

    port: int = 0
    server: object | None = field(default=None, init=False, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GcsEmulator:
        from gcp_storage_emulator.server import create_server

        from edgefleet.local.gcs_preconditions import enforce_generation_preconditions

        if not self.port:
            self.port = free_port()
        self.server = create_server("127.0.0.1", self.port, in_memory=True)
        self.server.start()  # serves from its own thread
        enforce_generation_preconditions(self.server)
        _wait_for_http(f"{self.endpoint}/storage/v1/b", READY_TIMEOUT_S)
        log.info("GCS emulator ready on %s", self.endpoint)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def __enter__(self) -> GcsEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
