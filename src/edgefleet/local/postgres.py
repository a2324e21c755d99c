"""A throw-away PostgreSQL server for the fleet state's tests and benchmark: Debian's postgresql-15, started on a
temporary directory (`postgres_server()`).

`initdb` refuses to run as root, so under root (CI's `.ci/run` runs as root) the server runs as the `postgres`
user that the Debian package creates (through `runuser`); otherwise as the current user. It listens only on a
unix socket in its own temporary directory, named after a port number that no other server here uses, so
tests running in parallel never meet. Authentication is `trust`: nothing but the socket's directory reaches it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

POSTGRES_BIN = Path(os.environ.get("EDGEFLEET_POSTGRES_BIN", "/usr/lib/postgresql/15/bin"))
SERVER_USER_WHEN_ROOT = "postgres"  # created by Debian's postgresql-common
SUPERUSER = "edgefleet"
START_TIMEOUT_S = 180  # a loaded CI machine: pg_ctl waits this long at most for the server to accept
INSTALL_FIX = "install Debian's postgresql-15 (`apt-get install -y postgresql-15`; .ci/run does)"


@dataclass(frozen=True)
class PostgresServer:
    """A running server: its socket directory and port (the socket is `<socket_dir>/.s.PGSQL.<port>`)."""

    socket_dir: Path
    port: int

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@/{database}?host={self.socket_dir}&port={self.port}"

    def new_database(self) -> str:
        """Creates an empty database; its URL."""
        import psycopg
        from psycopg import sql

        name = f"fleet_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)


def unavailable_reason() -> str | None:
    """Why no server can be started here (None: it can)."""
    if not (POSTGRES_BIN / "initdb").is_file():
        return f"PostgreSQL 15 is not installed ({POSTGRES_BIN}/initdb is missing): {INSTALL_FIX}"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER_WHEN_ROOT)
        except KeyError:
            return (f"running as root, initdb needs the non-root user {SERVER_USER_WHEN_ROOT!r}, which is missing: "
                    f"{INSTALL_FIX} (the package creates it)")
        if shutil.which("runuser") is None:
            return "running as root, and runuser (util-linux) is missing to start PostgreSQL as another user"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return ("the psycopg driver is not installed: make setup "
                "(pip install -e ./device -e ./flows -e ./infra -e '.[dev]')")
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", SERVER_USER_WHEN_ROOT, "--", *command]
    return command


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """Starts a throw-away server (initdb on a temporary directory) and removes it afterwards."""
    root = Path(tempfile.mkdtemp(prefix="edgefleet-pg-"))
    if os.geteuid() == 0:
        account = pwd.getpwnam(SERVER_USER_WHEN_ROOT)
        os.chown(root, account.pw_uid, account.pw_gid)
    data, log = root / "data", root / "server.log"
    port = _free_port()

    def run(*command: str) -> None:
        subprocess.run(_as_server_user(list(command)), cwd=root, check=True, capture_output=True, text=True)

    try:
        run(str(POSTGRES_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", SUPERUSER, "-E", "UTF8",
            "--no-sync")
        options = f"-c listen_addresses='' -k {root} -p {port} -c fsync=off -c max_connections=50"
        run(str(POSTGRES_BIN / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", str(START_TIMEOUT_S),
            "-o", options, "start")
    except subprocess.CalledProcessError as error:
        server_log = log.read_text() if log.is_file() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start: {error.stderr}\n{server_log}") from error
    try:
        yield PostgresServer(socket_dir=root, port=port)
    finally:
        subprocess.run(_as_server_user([str(POSTGRES_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w",
                                        "stop"]), cwd=root, capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)
