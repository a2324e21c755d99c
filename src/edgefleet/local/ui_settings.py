"""What the local Prefect stack is, before anything runs: its settings, the work pools prefect.yaml names,
the environment and the command line of its processes, and how a failed `prefect deploy` is summed up.

`edgefleet.local.ui` runs the stack from these.
"""

from __future__ import annotations

import os
import re
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from edgefleet.infra.pools import DEPLOYMENT_POOL, POOL_IDENTITY
from edgefleet.kernel.errors import ConfigError, EdgefleetError

PROCESS_POOL_TYPE = "process"
AUTH_STRING_BYTES = 32
AUTH_STRING_FILE = "api-auth-string"
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
    require_auth: bool = Field(
        default=True, description="The API requires the auth string in <PREFECT_HOME>/api-auth-string (the UI "
        "asks for it once), CSRF protection on, CORS only for the UI: whoever reaches the API can run flows "
        "that act on devices. Off only as an explicit choice")

    @property
    def home(self) -> Path:
        """The PREFECT_HOME in use."""
        return (self.prefect_home or self.project_dir / ".edgefleet" / "prefect").resolve()

    @property
    def auth_string_file(self) -> Path:
        return self.home / AUTH_STRING_FILE

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
                f"give it the work pool of the identity and key its code needs, so that pool's worker runs it: "
                f"{_pool_hint()}",
            )
        if name not in pools:
            pools.append(name)
    return tuple(pools)


def _pool_hint() -> str:
    """Each pool of edgefleet's prefect.yaml as the line to write, with the deployments it runs."""
    return "; ".join(
        f"`work_pool: {{name: {pool}}}` ({', '.join(name for name, where in DEPLOYMENT_POOL.items() if where == pool)})"
        for pool in POOL_IDENTITY
    ) + " (edgefleet.infra.pools)"


def auth_string(settings: UiSettings) -> str:
    """The server's API auth string: `<PREFECT_HOME>/api-auth-string` (mode 0600, made on first use), so only
    this user's processes and browser (the UI asks for it once) reach the API that runs flows on devices."""
    path = settings.auth_string_file
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_urlsafe(AUTH_STRING_BYTES))
    text = path.read_text().strip()
    if not text:
        raise UiError(f"{path} (the Prefect API auth string) is empty", f"delete it: a new one is made ({path})")
    return text


def prefect_env(settings: UiSettings, api_url: str, ui_url: str, base: Mapping[str, str],
                api_auth: str | None = None) -> dict[str, str]:
    """The environment of every Prefect process of the stack: this home, this server, no analytics; with
    `api_auth`, the server requires it (clients send it), CSRF protection is on and CORS admits only the UI."""
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
    if api_auth is not None:
        env.update({
            "PREFECT_SERVER_API_AUTH_STRING": api_auth,  # the server: every API call needs it (health excepted)
            "PREFECT_API_AUTH_STRING": api_auth,  # the clients: workers, deploy, flow runs
            "PREFECT_SERVER_CSRF_PROTECTION_ENABLED": "true",
            "PREFECT_SERVER_CORS_ALLOWED_ORIGINS": ui_url,  # only the server's own UI
        })
    return env


def prefect_command(*args: str) -> list[str]:
    """The Prefect CLI of this interpreter (the venv's), whatever is on PATH."""
    return [sys.executable, "-m", "prefect", *args]


def error_summary(log_text: str, lines: int = ERROR_SUMMARY_LINES) -> str:
    """The last exception lines of a log (what a traceback concluded), else its last lines."""
    found: list[str] = []
    for line in log_text.splitlines():
        if _EXCEPTION_LINE.match(line) and line not in found:
            found.append(line)
    return "\n".join(found[-lines:] or log_text.splitlines()[-lines:])
