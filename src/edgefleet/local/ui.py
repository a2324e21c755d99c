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

What the stack is (settings, the pools prefect.yaml names, the processes' environment and command lines) is
`edgefleet.local.ui_settings`; each process is a `edgefleet.local.processes.ManagedProcess`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime

from edgefleet.local.processes import ManagedProcess, free_port, http_status, port_is_free
from edgefleet.local.ui_settings import (
    PROCESS_POOL_TYPE,
    Deployment,
    UiError,
    UiSettings,
    auth_string,
    error_summary,
    prefect_command,
    prefect_env,
    read_work_pools,
)

__all__ = ["Deployment", "LocalPrefectUi", "UiError", "UiSettings", "prefect_env", "read_work_pools"]

log = logging.getLogger(__name__)

HEALTH_PATH = "/api/health"
DEPLOY_LOG = "deploy.log"  # in the log directory: `prefect deploy --all`'s output


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
    server: ManagedProcess | None = field(default=None, init=False, repr=False)
    workers: dict[str, ManagedProcess] = field(default_factory=dict, init=False, repr=False)
    _worker_started: dict[str, datetime] = field(default_factory=dict, init=False, repr=False)

    @property
    def ui_url(self) -> str:
        return f"http://{self.settings.host}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.ui_url}/api"

    @property
    def auth_string(self) -> str | None:
        """What the API requires (basic auth; the UI's login asks for it), None when the settings turn it off."""
        return auth_string(self.settings) if self.settings.require_auth else None

    @property
    def env(self) -> dict[str, str]:
        """The environment the stack's processes run with (use it for `prefect` commands of your own)."""
        return prefect_env(self.settings, self.api_url, self.ui_url, os.environ, self.auth_string)

    def start(self) -> LocalPrefectUi:
        """Starts everything and returns when the worker polls the pool; stops what it started on failure.

        Raises:
            ConfigError: prefect.yaml is missing or malformed.
            UiError: the port is taken, or the server, the deploy or the worker failed (with its log's tail).
        """
        self.work_pools = read_work_pools(self.settings.prefect_yaml)
        return self._start(with_workers=True)

    def start_server(self) -> LocalPrefectUi:
        """Starts the Prefect server alone (no pools, deployments or workers): for flows run in-process, as
        `make demo` does, with a server in its own session so Ctrl-C reaches only the caller.

        Raises:
            UiError: the port is taken, or the server did not become healthy (with its log's tail).
        """
        return self._start(with_workers=False)

    def _start(self, with_workers: bool) -> LocalPrefectUi:
        settings = self.settings
        self.port = settings.port or free_port(settings.host)
        if not port_is_free(settings.host, self.port):
            raise UiError(
                f"port {self.port} on {settings.host} is already in use (another Prefect server?)",
                "stop what listens there, or pass --port 0 to use any free port",
            )
        settings.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_server()
            if with_workers:
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

    def stop(self) -> None:
        """Stops the workers (and their flow runs), then the server."""
        for worker in self.workers.values():
            worker.stop()
        self.workers.clear()
        self._worker_started.clear()
        if self.server is not None:
            self.server.stop()
            self.server = None

    def check_alive(self) -> None:
        """Raises UiError (with the log's tail) when the server or a worker has exited since start."""
        if self.server is None:
            raise UiError("the Prefect server never started", f"see {self.settings.log_dir / 'server.log'}")
        for process in self.processes.values():
            process.check_alive()

    @property
    def processes(self) -> dict[str, ManagedProcess]:
        """The processes running now, by a stable name: `prefect-server`, `worker-<pool>`."""
        server = {"prefect-server": self.server} if self.server is not None else {}
        return server | {f"worker-{pool}": worker for pool, worker in self.workers.items()}

    def __enter__(self) -> LocalPrefectUi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- steps -------------------------------------------------------------------------------------------------

    def _process(self, name: str, argv: list[str], log_name: str, append_log: bool = True,
                 env: dict[str, str] | None = None) -> ManagedProcess:
        return ManagedProcess(name, argv, log_path=self.settings.log_dir / log_name, env=env or self.env,
                              cwd=self.settings.project_dir.resolve(), stop_timeout_s=self.settings.stop_timeout_s,
                              append_log=append_log, error=UiError)

    def _start_server(self) -> None:
        settings = self.settings
        argv = prefect_command(
            "server", "start", "--host", settings.host, "--port", str(self.port), "--analytics-off",
            "--scheduler" if settings.run_schedules else "--no-scheduler",
        )
        log.info("starting Prefect server on %s (PREFECT_HOME %s)", self.ui_url, settings.home)
        self.server = self._process("Prefect server", argv, "server.log").start()
        health = self.ui_url + HEALTH_PATH
        self.server.wait_ready(lambda: http_status(health, settings.http_timeout_s) == 200,
                               settings.server_ready_timeout_s, settings.poll_interval_s,
                               waiting_for=f"{health} answering 200", fix=f"is port {self.port} free?")

    def client(self):
        """A synchronous Prefect client of this server (use it as a context manager)."""
        from prefect.client.orchestration import SyncPrefectClient

        return SyncPrefectClient(self.api_url, auth_string=self.auth_string)

    def _ensure_work_pool(self, name: str) -> None:
        from prefect.client.schemas.actions import WorkPoolCreate
        from prefect.exceptions import ObjectNotFound
        from prefect.workers.process import ProcessWorker

        with self.client() as client:
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
        argv = prefect_command("deploy", "--all", "--no-prompt", "--prefect-file", str(settings.prefect_yaml))
        log.info("registering the deployments of %s", settings.prefect_yaml)
        # One log per deploy (not appended): its error summary must not pick up an earlier run's failure.
        # prefect.yaml's pull step reads {{ $PWD }} at deploy time: point it at this checkout.
        deploy = self._process("`prefect deploy --all`", argv, DEPLOY_LOG, append_log=False,
                               env=self.env | {"PWD": str(settings.project_dir.resolve())})
        status = deploy.start().wait(settings.deploy_timeout_s)
        deploy_log = settings.log_dir / DEPLOY_LOG
        if status != 0:
            raise UiError(
                f"`prefect deploy --all` failed with status {status}:\n"
                f"{error_summary(deploy_log.read_text(errors='replace'))}",
                f"fix the deployment it names in {settings.prefect_yaml} (full log: {deploy_log})",
            )
        with self.client() as client:
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
        name = self._worker_name(pool)
        argv = prefect_command(
            "worker", "start", "--pool", pool, "--type", PROCESS_POOL_TYPE, "--name", name,
            "--install-policy", "never", "--no-create-pool-if-not-found",
        )
        log.info("starting worker %s on pool %s", name, pool)
        self._worker_started[pool] = datetime.now(UTC)
        self.workers[pool] = self._process(f"worker of pool {pool}", argv, f"worker-{pool}.log").start()

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
        with self.client() as client:
            self.workers[pool].wait_ready(lambda: self._worker_heartbeat_since_start(client, pool),
                                          settings.worker_ready_timeout_s, settings.poll_interval_s,
                                          waiting_for="its first heartbeat")
