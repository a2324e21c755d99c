"""Start and stop the official Pub/Sub emulator and the GCS emulator on loopback ports.

Used by the tests' fixtures, `make demo` and `edgefleet local up`: the same code starts the same stack.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from edgefleet.kernel.errors import EdgefleetError
from edgefleet.local.processes import LOOPBACK, ManagedProcess, free_port, http_status, wait_until

__all__ = ["GcsEmulator", "PubSubEmulator", "find_pubsub_emulator", "free_port"]  # free_port: tests import it here

log = logging.getLogger(__name__)

PUBSUB_EMULATOR_CANDIDATES = (
    "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator",
    "/usr/share/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator",
    "/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator",
)
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


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


def _answers(url: str) -> bool:
    status = http_status(url)
    return status is not None and status < 500


class _ThreadedServer(Protocol):
    """gcp-storage-emulator's server (the package has no type hints): serves from a thread of its own."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


_Service = TypeVar("_Service", bound="_LoopbackService")


@dataclass
class _LoopbackService:
    """A server on a loopback port (a free one when `port` is 0), usable as a context manager."""

    port: int = 0

    @property
    def host(self) -> str:
        """host:port, as PUBSUB_EMULATOR_HOST takes it."""
        return f"{LOOPBACK}:{self.port}"

    def _claim_port(self) -> None:
        if not self.port:
            self.port = free_port(LOOPBACK)

    def start(self: _Service) -> _Service:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self: _Service) -> _Service:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class PubSubEmulator(_LoopbackService):
    """The official Pub/Sub emulator as a child process (its PID is the JVM's).

    Use as a context manager, or call `start()` and `stop()`. `host` is what clients put in
    `PUBSUB_EMULATOR_HOST`.
    """

    project: str = "edgefleet-local"
    log_path: Path | None = None
    process: ManagedProcess | None = field(default=None, init=False, repr=False)

    def start(self) -> PubSubEmulator:
        self._claim_port()
        launcher = find_pubsub_emulator()
        # A session of its own: stop() signals the launcher script and the JVM together.
        self.process = ManagedProcess(
            "Pub/Sub emulator", [str(launcher), f"--host={LOOPBACK}", f"--port={self.port}"],
            log_path=self.log_path, stop_timeout_s=STOP_TIMEOUT_S,
        ).start()
        try:
            self.process.wait_ready(lambda: _answers(f"http://{self.host}/"), READY_TIMEOUT_S,
                                    waiting_for=f"http://{self.host}/",
                                    fix="is the port free? Java installed? does the emulator start by hand?")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def restart(self) -> None:
        """Stops and starts again on the same port (the emulator keeps no state across this)."""
        self.stop()
        self.start()


@dataclass
class GcsEmulator(_LoopbackService):
    """`gcp-storage-emulator` served in-process from a background thread, in memory.

    Clients use `STORAGE_EMULATOR_HOST` = `endpoint` and anonymous credentials. The emulator ignores
    generation preconditions; `start()` makes it enforce them as GCS does (`edgefleet.local.gcs_preconditions`).
    """

    server: _ThreadedServer | None = field(default=None, init=False, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}"

    def start(self) -> GcsEmulator:
        from gcp_storage_emulator.server import create_server

        from edgefleet.local.gcs_preconditions import enforce_generation_preconditions

        self._claim_port()
        server: _ThreadedServer = create_server(LOOPBACK, self.port, in_memory=True)
        self.server = server
        server.start()  # serves from its own thread
        enforce_generation_preconditions(server)
        url = f"{self.endpoint}/storage/v1/b"
        if not wait_until(lambda: _answers(url), timeout_s=READY_TIMEOUT_S, interval_s=0.1):
            self.stop()
            raise EdgefleetError(f"the GCS emulator at {url} was not ready within {READY_TIMEOUT_S:.0f} s",
                                 "check that the port is free")
        log.info("GCS emulator ready on %s", self.endpoint)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
