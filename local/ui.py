"""The Prefect UI on this machine: `prefect server start`, a process work pool, the deployments of
`prefect.yaml` and a worker, started together and stopped together.

Used by `edgefleet ui` (`make ui`) and by the browser test (`tests/e2e`): the same code starts the same stack.

    from edgefleet.local.ui import LocalPrefectUi, UiSettings

    with LocalPrefectUi(UiSettings(project_dir=Path("."), port=0)) as ui:
        print(ui.ui_url, ui.deployments)

Nothing here reaches the network: analytics are off, the server listens on loopback, and the deployments'
pull step only changes directory into this checkout (no git clone). Prefect's state (SQLite database,
profiles, UI build) lives under `<project>/.edgefleet/prefect` unless another `prefect_home` is given, so
the user's `~/.prefect` is left alone.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import yaml
from pydantic import BaseModel, ConfigDict, Field

from edgefleet.kernel.errors import ConfigError, EdgefleetError

log = logging.getLogger(__name__)

PROCESS_POOL_TYPE = "process"
HEALTH_PATH = "/api/health"
LOG_TAIL_LINES = 30
ERROR_SUMMARY_LINES = 3
# A traceback's verdict line: "FileNotFoundError: ...", "prefect.exceptions.ScriptError: ...".
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b.*")


class UiError(EdgefleetError):
    """The local Prefect server, worker or deployments could not be started."""


class UiSettings(BaseModel):
    """Where and how the local Prefect stack runs (defaults are what `edgefleet ui` uses)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    project_dir: Path = Field(description="Checkout holding prefect.yaml; the worker runs the flows from here")
    prefect_file: str = Field(default="prefect.yaml", description="Deployments file, relative to project_dir")
    prefect_home: Path | None = Field(
        default=None,
        description="PREFECT_HOME of the server, worker and deploy (database, profiles, UI build); "
        "empty: <project_dir>/.edgefleet/prefect",
    )
    host: str = Field(default="127.0.0.1", description="Address the server listens on (loopback: local only)")
    port: int = Field(default=4200, ge=0, le=65535, description="Server port; 0: any free port")
    run_schedules: bool = Field(
        default=True,
        description="Run the server's scheduler; off: scheduled deployments start no runs by themselves",
    )
    worker_name: str = Field(default="edgefleet-local-worker", description="Name of the process worker")
    worker_query_seconds: float = Field(
        default=2.0, gt=0, description="How often the worker polls for runs (Prefect's default is 10 s)"
    )
    server_ready_timeout_s: float = Field(
        default=180.0, gt=0, description="Longest wait for /api/health (first start migrates the database)"
    )
    deploy_timeout_s: float = Field(default=300.0, gt=0, description="Longest `prefect deploy --all` may take")
    worker_ready_timeout_s: float = Field(
        default=120.0, gt=0, description="Longest wait for the worker's first heartbeat (pool READY)"
    )
    stop_timeout_s: float = Field(default=20.0, gt=0, description="Grace after SIGTERM before SIGKILL")
    poll_interval_s: float = Field(default=0.5, gt=0, description="Sleep between readiness checks")
    http_timeout_s: float = Field(default=5.0, gt=0, description="Timeout of one health request")

    @property
    def home(self) -> Path:
        """The PREFECT_HOME in use."""
        return (self.prefect_home or self.project_dir / ".edgefleet" / "prefect").resolve()

    @property
    def log_dir(self) -> Path:
        """Where server.log, deploy.log and worker.log go."""
        return self.home / "logs"

    @property
    def prefect_yaml(self) -> Path:
        return (self.project_dir / self.prefect_file).resolve()


class Deployment(BaseModel):
    """One deployment of prefect.yaml, as registered: `flow_name/name` is what `prefect deployment run` takes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    flow_name: str
    name: str
    work_pool: str | None

    @property
    def full_name(self) -> str:
        return f"{self.flow_name}/{self.name}"


def free_port(host: str) -> int:
    """Returns a TCP port on `host` that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on host:port (a bind succeeds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def read_work_pools(prefect_yaml: Path) -> tuple[str, ...]:
    """The work pools the deployments of a prefect.yaml name, in order of first use.

    Raises:
        ConfigError: the file is missing, not YAML, has no deployments, or a deployment names no work pool.
    """
    if not prefect_yaml.is_file():
        raise ConfigError(
            f"{prefect_yaml} does not exist",
            "run `edgefleet ui` from the edgefleet checkout, or pass --project-dir to the directory holding "
            "prefect.yaml",
        )
    try:
        document = yaml.safe_load(prefect_yaml.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{prefect_yaml} is not valid YAML: {error}", "fix the YAML syntax") from error
    deployments = document.get("deployments") if isinstance(document, dict) else None
    if not isinstance(deployments, list) or not deployments:
        raise ConfigError(
            f"{prefect_yaml} lists no deployments", "add a `deployments:` list (see the Prefect docs on prefect.yaml)"
        )
    pools: list[str] = []
    for index, deployment in enumerate(deployments):
        work_pool = deployment.get("work_pool") if isinstance(deployment, dict) else None
        name = work_pool.get("name") if isinstance(work_pool, dict) else None
        if not name:
            label = deployment.get("name", f"#{index}") if isinstance(deployment, dict) else f"#{index}"
            raise ConfigError(
                f"deployment {label} in {prefect_yaml} names no work pool",
                "give it `work_pool: {name: edgefleet-process}` so the local worker runs it",
            )
        if name not in pools:
            pools.append(name)
    return tuple(pools)


def prefect_env(settings: UiSettings, api_url: str, ui_url: str, base: Mapping[str, str]) -> dict[str, str]:
    """The environment of every Prefect process of the stack: this home, this server, no analytics."""
    env = dict(base)
    # A profile or key from the user's shell would point the CLI elsewhere (Prefect Cloud): drop them.
    for name in ("PREFECT_PROFILE", "PREFECT_API_KEY", "PREFECT_PROFILES_PATH"):
        env.pop(name, None)
    env.update(
        {
            "PREFECT_HOME": str(settings.home),
            "PREFECT_API_URL": api_url,
            "PREFECT_UI_URL": ui_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_WORKER_QUERY_SECONDS": str(settings.worker_query_seconds),
        }
    )
    return env


def prefect_command(*args: str) -> list[str]:
    """The Prefect CLI of this interpreter (the venv's), whatever is on PATH."""
    return [sys.executable, "-m", "prefect", *args]


def server_healthy(api_url: str, timeout_s: float) -> bool:
    """True when the server's `/api/health` answers 200."""
    try:
        with urllib.request.urlopen(api_url.removesuffix("/api") + HEALTH_PATH, timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a log file (empty when it does not exist)."""
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def error_summary(log_text: str, lines: int = ERROR_SUMMARY_LINES) -> str:
    """The last exception lines of a log (what a traceback concluded), else its last lines."""
    found: list[str] = []
    for line in log_text.splitlines():
        if _EXCEPTION_LINE.match(line) and line not in found:
            found.append(line)
    return "\n".join(found[-lines:] or log_text.splitlines()[-lines:])


def stop_process(process: subprocess.Popen, timeout_s: float) -> int | None:
    """SIGTERM to the process group of `process`, SIGKILL after `timeout_s`; returns the exit status."""
    if process.poll() is not None:
        return process.returncode
    for signum in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            break
        try:
            return process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("process %d did not stop within %.0f s after signal %d", process.pid, timeout_s, signum)
    return process.poll()


def _spawn(argv: list[str], env: Mapping[str, str], cwd: Path, log_file: IO[bytes]) -> subprocess.Popen:
    # Its own session: Ctrl-C in the terminal reaches only `edgefleet ui`, which then stops the group in order.
    return subprocess.Popen(
        argv, env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@dataclass
class LocalPrefectUi:
    """The local Prefect stack: server, process work pool(s), deployments of prefect.yaml, worker(s).

    Use as a context manager, or call `start()` and `stop()` (which is safe to call twice, or after a failed
    start). `api_url` is what clients put in PREFECT_API_URL; `ui_url` is what a browser opens.
    """

    settings: UiSettings
    port: int = field(default=0, init=False)
    deployments: tuple[Deployment, ...] = field(default=(), init=False)
    work_pools: tuple[str, ...] = field(default=(), init=False)
    server: subprocess.Popen | None = field(default=None, init=False, repr=False)
    workers: dict[str, subprocess.Popen] = field(default_factory=dict, init=False, repr=False)
    _worker_started: dict[str, datetime] = field(default_factory=dict, init=False, repr=False)
    _logs: list[IO[bytes]] = field(default_factory=list, init=False, repr=False)

    @property
    def ui_url(self) -> str:
        return f"http://{self.settings.host}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.ui_url}/api"

    @property
    def env(self) -> dict[str, str]:
        """The environment the stack's processes run with (use it for `prefect` commands of your own)."""
        return prefect_env(self.settings, self.api_url, self.ui_url, os.environ)

    def start(self) -> LocalPrefectUi:
        """Starts everything and returns when the worker polls the pool; stops what it started on failure.

        Raises:
            ConfigError: prefect.yaml is missing or malformed.
            UiError: the port is taken, or the server, the deploy or the worker failed (with its log's tail).
        """
        settings = self.settings
        self.work_pools = read_work_pools(settings.prefect_yaml)
        self.port = settings.port or free_port(settings.host)
        if not port_is_free(settings.host, self.port):
            raise UiError(
                f"port {self.port} on {settings.host} is already in use (another Prefect server?)",
                "stop what listens there, or pass --port 0 to use any free port",
            )
        settings.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_server()
            for pool in self.work_pools:
                self._ensure_work_pool(pool)
            self._deploy()
            for pool in self.work_pools:
                self._start_worker(pool)
            for pool in self.work_pools:
                self._wait_for_worker(pool)
        except BaseException:
            self.stop()
            raise
        return self

    def start_server(self) -> LocalPrefectUi:
        """Starts the Prefect server alone (no pools, deployments or workers): for flows run in-process, as
        `make demo` does, with a server in its own session so Ctrl-C reaches only the caller.

        Raises:
            UiError: the port is taken, or the server did not become healthy (with its log's tail).
        """
        self.port = self.settings.port or free_port(self.settings.host)
        if not port_is_free(self.settings.host, self.port):
            raise UiError(f"port {self.port} on {self.settings.host} is already in use",
                          "stop what listens there, or use port 0 (any free port)")
        self.settings.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_server()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stops the workers (and their flow runs), then the server; closes the logs."""
        for pool, worker in list(self.workers.items()):
            log.info("stopping worker of pool %s (pid %d)", pool, worker.pid)
            stop_process(worker, self.settings.stop_timeout_s)
        self.workers.clear()
        self._worker_started.clear()
        if self.server is not None:
            log.info("stopping Prefect server (pid %d)", self.server.pid)
            stop_process(self.server, self.settings.stop_timeout_s)
            self.server = None
        for handle in self._logs:
            handle.close()
        self._logs.clear()

    def check_alive(self) -> None:
        """Raises UiError when the server or a worker has exited since start."""
        processes = {"Prefect server": (self.server, "server.log")} | {
            f"worker of pool {pool}": (worker, f"worker-{pool}.log") for pool, worker in self.workers.items()
        }
        for what, (process, log_name) in processes.items():
            if process is None or process.poll() is not None:
                status = "never started" if process is None else f"exited with status {process.returncode}"
                raise UiError(
                    f"the {what} {status}:\n{log_tail(self.settings.log_dir / log_name)}",
                    f"see {self.settings.log_dir / log_name}",
                )

    def __enter__(self) -> LocalPrefectUi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- steps -------------------------------------------------------------------------------------------------

    def _open_log(self, name: str) -> IO[bytes]:
        handle = open(self.settings.log_dir / name, "ab")  # noqa: SIM115 - closed in stop()
        self._logs.append(handle)
        return handle

    def _start_server(self) -> None:
        settings = self.settings
        argv = prefect_command(
            "server", "start", "--host", settings.host, "--port", str(self.port), "--analytics-off",
            "--scheduler" if settings.run_schedules else "--no-scheduler",
        )
        log.info("starting Prefect server on %s (PREFECT_HOME %s)", self.ui_url, settings.home)
        self.server = _spawn(argv, self.env, settings.project_dir, self._open_log("server.log"))
        deadline = time.monotonic() + settings.server_ready_timeout_s
        while not server_healthy(self.api_url, settings.http_timeout_s):
            if self.server.poll() is not None:
                raise UiError(
                    f"the Prefect server exited with status {self.server.returncode} before it was ready:\n"
                    f"{log_tail(settings.log_dir / 'server.log')}",
                    f"see {settings.log_dir / 'server.log'}; is port {self.port} free?",
                )
            if time.monotonic() > deadline:
                raise UiError(
                    f"the Prefect server at {self.api_url} was not healthy after "
                    f"{settings.server_ready_timeout_s:.0f} s",
                    f"see {settings.log_dir / 'server.log'}",
                )
            time.sleep(settings.poll_interval_s)
        log.info("Prefect server healthy at %s", self.api_url)

    def _client(self):
        from prefect.client.orchestration import SyncPrefectClient

        return SyncPrefectClient(self.api_url)

    def _ensure_work_pool(self, name: str) -> None:
        from prefect.client.schemas.actions import WorkPoolCreate
        from prefect.exceptions import ObjectNotFound
        from prefect.workers.process import ProcessWorker

        with self._client() as client:
            try:
                pool = client.read_work_pool(name)
            except ObjectNotFound:
                # The template comes from the installed worker type, as `prefect work-pool create` does: no
                # registry lookup over the network.
                client.create_work_pool(
                    WorkPoolCreate(
                        name=name,
                        type=PROCESS_POOL_TYPE,
                        base_job_template=ProcessWorker.get_default_base_job_template(),
                        description="edgefleet local process pool (created by `edgefleet ui`)",
                    )
                )
                log.info("created work pool %s (type %s)", name, PROCESS_POOL_TYPE)
                return
        if pool.type != PROCESS_POOL_TYPE:
            raise UiError(
                f"work pool {name} exists with type {pool.type!r}, not {PROCESS_POOL_TYPE!r}",
                f"delete it (`prefect work-pool delete {name}`) or use a fresh --prefect-home",
            )

    def _deploy(self) -> None:
        settings = self.settings
        # prefect.yaml's pull step reads {{ $PWD }} at deploy time: point it at this checkout.
        env = self.env | {"PWD": str(settings.project_dir.resolve())}
        argv = prefect_command("deploy", "--all", "--no-prompt", "--prefect-file", str(settings.prefect_yaml))
        log_path = settings.log_dir / "deploy.log"
        log.info("registering the deployments of %s", settings.prefect_yaml)
        # One log per deploy: its error summary must not pick up an earlier run's failure.
        with open(log_path, "wb") as log_file:
            deploy = _spawn(argv, env, settings.project_dir.resolve(), log_file)
            try:
                status = deploy.wait(timeout=settings.deploy_timeout_s)
            except subprocess.TimeoutExpired:
                stop_process(deploy, settings.stop_timeout_s)
                raise UiError(
                    f"`prefect deploy --all` did not finish within {settings.deploy_timeout_s:.0f} s",
                    f"see {log_path}",
                ) from None
            except BaseException:
                stop_process(deploy, settings.stop_timeout_s)
                raise
        if status != 0:
            raise UiError(
                f"`prefect deploy --all` failed with status {status}:\n"
                f"{error_summary(log_path.read_text(errors='replace'))}",
                f"fix the deployment it names in {settings.prefect_yaml} (full log: {log_path})",
            )
        with self._client() as client:
            flows = {flow.id: flow.name for flow in client.read_flows()}
            self.deployments = tuple(
                sorted(
                    (
                        Deployment(
                            flow_name=flows.get(deployment.flow_id, "?"),
                            name=deployment.name,
                            work_pool=deployment.work_pool_name,
                        )
                        for deployment in client.read_deployments()
                    ),
                    key=lambda deployment: deployment.full_name,
                )
            )
        log.info("deployments: %s", ", ".join(d.full_name for d in self.deployments))

    def _worker_name(self, pool: str) -> str:
        name = self.settings.worker_name
        return name if len(self.work_pools) == 1 else f"{name}-{pool}"

    def _start_worker(self, pool: str) -> None:
        settings = self.settings
        name = self._worker_name(pool)
        argv = prefect_command(
            "worker", "start", "--pool", pool, "--type", PROCESS_POOL_TYPE, "--name", name,
            "--install-policy", "never", "--no-create-pool-if-not-found",
        )
        log.info("starting worker %s on pool %s", name, pool)
        self._worker_started[pool] = datetime.now(UTC)
        self.workers[pool] = _spawn(
            argv, self.env, settings.project_dir.resolve(), self._open_log(f"worker-{pool}.log")
        )

    def _worker_heartbeat_since_start(self, client, pool: str) -> bool:
        # The pool's READY status and an old worker row outlive a previous `edgefleet ui` (until the heartbeat
        # times out), so only a heartbeat of this worker, sent after it was started, counts.
        name, started = self._worker_name(pool), self._worker_started[pool]
        return any(
            worker.name == name and worker.last_heartbeat_time is not None
            and worker.last_heartbeat_time >= started
            for worker in client.read_workers_for_work_pool(pool)
        )

    def _wait_for_worker(self, pool: str) -> None:
        settings = self.settings
        deadline = time.monotonic() + settings.worker_ready_timeout_s
        with self._client() as client:
            while not self._worker_heartbeat_since_start(client, pool):
                worker = self.workers[pool]
                if worker.poll() is not None:
                    raise UiError(
                        f"the worker of pool {pool} exited with status {worker.returncode}:\n"
                        f"{log_tail(settings.log_dir / f'worker-{pool}.log')}",
                        f"see {settings.log_dir / f'worker-{pool}.log'}",
                    )
                if time.monotonic() > deadline:
                    raise UiError(
                        f"the worker of pool {pool} sent no heartbeat within {settings.worker_ready_timeout_s:.0f} s",
                        f"see {settings.log_dir / f'worker-{pool}.log'}",
                    )
                time.sleep(settings.poll_interval_s)
        log.info("worker %s polling pool %s", self._worker_name(pool), pool)
