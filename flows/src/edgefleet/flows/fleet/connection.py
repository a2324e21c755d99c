"""The project's one way to reach a host over SSH (Fabric on paramiko): host keys verified, nothing hangs.

Fabric's `Connection` accepts unknown host keys by default (paramiko `AutoAddPolicy`); for a fleet that
would let anybody answering on a device's address receive models and run commands. Here every connection
loads the inventory's `known_hosts` and uses `RejectPolicy`: an unknown host is refused, a changed key is
refused, and both raise `HostKeyError` naming the host. Devices (`DeviceConnection`), the compile host and
any other `SshHost` (`HostConnection`) all connect through `open_verified_connection`.

Every network step has a timeout: TCP connect, SSH banner and authentication (`connect_timeout_s`) and
each remote command (`command_timeout_s`), so an unreachable device is a failure, never a hang.
"""

from __future__ import annotations

import io
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Protocol, Self, TypeVar

import tenacity
from fabric import Config, Connection
from invoke.exceptions import CommandTimedOut
from paramiko.client import MissingHostKeyPolicy
from paramiko.pkey import PKey
from paramiko.ssh_exception import AuthenticationException, BadHostKeyException, SSHException

from edgefleet.flows.fleet.hosts import SshHost
from edgefleet.flows.fleet.inventory import DeviceSpec, Inventory
from edgefleet.flows.fleet.known_hosts import KnownHosts, load_known_hosts
from edgefleet.flows.fleet.shell import agent_command
from edgefleet.kernel.errors import ConfigError, EdgefleetError

log = logging.getLogger(__name__)

H = TypeVar("H", bound=SshHost)

UNKNOWN_HOST_MARK = "not found in known_hosts"


class HostKeyError(EdgefleetError):
    """A device's SSH host key is unknown or differs from known_hosts: the connection was refused."""


class DeviceUnreachable(EdgefleetError):
    """A host (device, bastion, compile host) cannot be reached or logged into over SSH (within the timeouts)."""


class RemoteCommandError(EdgefleetError):
    """A command on a host failed or timed out."""

    def __init__(self, message: str, fix: str | None = None, *, exit_code: int | None = None,
                 stdout: str = "", stderr: str = "") -> None:
        super().__init__(message, fix)
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr


@dataclass(frozen=True)
class CommandResult:
    """What a remote command printed and returned."""

    stdout: str
    stderr: str
    exit_code: int


def host_key_name(host: str, port: int) -> str:
    """How known_hosts names a host: `host` on port 22, else `[host]:port` (OpenSSH and paramiko agree)."""
    return host if port == 22 else f"[{host}]:{port}"


def _transient(error: BaseException) -> bool:
    return isinstance(error, DeviceUnreachable) and not isinstance(error, HostKeyError)


class _RefuseUnknown(MissingHostKeyPolicy):
    """paramiko's RejectPolicy, saying "revoked" when the unknown key is a revoked one."""

    def __init__(self, known: KnownHosts, where: str, known_hosts: Path) -> None:
        self._known, self._where, self._file = known, where, known_hosts

    def missing_host_key(self, client: object, hostname: str, key: PKey) -> None:
        if self._known.is_revoked(key):
            raise _revoked(self._where, self._file)
        raise SSHException(f"Server {hostname!r} {UNKNOWN_HOST_MARK}")


def _revoked(where: str, known_hosts: Path) -> HostKeyError:
    return HostKeyError(f"{where} presented a host key that {known_hosts} marks @revoked: refused",
                        "the device's host key was revoked (stolen or retired): re-key the device, check its new "
                        f"key out of band and add it to {known_hosts}")


def open_verified_connection(host: str, port: int, user: str, key_file: Path, known_hosts: Path, *,
                             timeout_s: float, where: str, gateway: Connection | None = None) -> Connection:
    """The project's one way to open an SSH connection (devices, deploy-agent, the compile host): Fabric with
    the host key checked against `known_hosts` (paramiko `RejectPolicy`: an unknown or changed key is refused),
    only `key_file` offered (no agent, no ~/.ssh keys, no ssh_config), and `timeout_s` on TCP connect, banner
    and authentication.

    Args:
        where: how errors name the other end, e.g. "device cam-1 (10.0.0.7:22)".
        gateway: an open connection (made by this function: its host key checked too) to a bastion; the
            connection then goes through it (a `direct-tcpip` channel, OpenSSH's ProxyJump). The caller closes it.

    Raises:
        HostKeyError: unknown or changed host key (never worth a retry).
        DeviceUnreachable: refused, timed out, SSH failed, or the key was not accepted.
    """
    config = Config(overrides={"load_ssh_configs": False, "run": {"in_stream": False}})
    connection = Connection(
        host, user=user, port=port, config=config, connect_timeout=timeout_s, gateway=gateway or False,
        connect_kwargs={"key_filename": [os.fspath(key_file)], "look_for_keys": False,
                        "allow_agent": False, "banner_timeout": timeout_s, "auth_timeout": timeout_s},
    )
    known = load_known_hosts(known_hosts)
    client = connection.client
    if client is None:  # Fabric makes its SSHClient in Connection.__init__; typed Optional for its class default
        raise DeviceUnreachable(f"{where}: Fabric made no SSH client", "check the fabric installation")
    known.add_to(client.get_host_keys())
    client.set_missing_host_key_policy(_RefuseUnknown(known, where, known_hosts))
    try:
        connection.open()
    except HostKeyError:
        connection.close()
        raise
    except BadHostKeyException as error:
        connection.close()
        if known.is_revoked(error.key):
            raise _revoked(where, known_hosts) from error
        raise HostKeyError(
            f"{where} presented a host key that differs from {known_hosts}: refused (the device was "
            "re-installed, or something else answers on its address)",
            f"check the device's key out of band; if it is right, replace its line: ssh-keygen -R "
            f"'{host_key_name(host, port)}' -f {known_hosts}, then add the new key",
        ) from error
    except AuthenticationException as error:
        connection.close()
        raise DeviceUnreachable(f"{where} did not accept the key {key_file}: {error}",
                                "add the public key to the device's authorized_keys, or fix user/key_file") \
            from error
    except SSHException as error:
        connection.close()
        if UNKNOWN_HOST_MARK in str(error):
            raise HostKeyError(
                f"{where} is not in {known_hosts}: refused (unknown host keys are never accepted)",
                f"add its host key after checking it out of band: ssh-keyscan -p {port} {host} >> {known_hosts}",
            ) from error
        raise DeviceUnreachable(f"{where}: SSH failed: {error}", "check that sshd runs on the device") from error
    except (TimeoutError, OSError, EOFError) as error:
        connection.close()
        raise DeviceUnreachable(
            f"{where} is unreachable: {error} (after {timeout_s} s at most)",
            "check that the device is on, on the network, and that sshd listens on that port",
        ) from error
    return connection


class HostConnection(Generic[H]):
    """An open SSH connection to one host (`spec`). Use as a context manager, or call `close()`.

    Args:
        spec: the host (address, key, bastion, timeouts).
        known_hosts: the known_hosts file vouching for its host key (and its bastion's).
    """

    def __init__(self, spec: H, known_hosts: Path) -> None:
        self.spec = spec
        self.known_hosts = Path(known_hosts)
        self._connection: Connection | None = None
        self._gateway: Connection | None = None

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connection(self) -> Connection:
        """The open Fabric connection (reopened when it dropped)."""
        if self._connection is None or not self._connection.is_connected:
            self._connection = None
            return self._open()
        return self._connection

    def open(self) -> None:
        """Connects (retrying transient failures `connect_attempts` times).

        Raises:
            HostKeyError: unknown or changed host key (never retried).
            DeviceUnreachable: refused, timed out, or the key was not accepted.
            ConfigError: the key file or known_hosts file is missing.
        """
        if self._connection is None or not self._connection.is_connected:
            self._open()

    def _open(self) -> Connection:
        spec = self.spec
        if not self.known_hosts.is_file():
            raise ConfigError(f"known_hosts file {self.known_hosts} (inventory) does not exist",
                              "create it with each host's key (ssh-keyscan, checked out of band)")
        for field, key_file in (("key_file", spec.key_file), ("gateway.key_file", spec.gateway_key_file)):
            if key_file is not None and not key_file.is_file():
                raise ConfigError(f"{spec.label}: field '{field}': {key_file} does not exist",
                                  "point it at the SSH private key that the host's authorized_keys accepts")
        retrying = tenacity.Retrying(stop=tenacity.stop_after_attempt(spec.connect_attempts),
                                     wait=tenacity.wait_fixed(spec.connect_retry_wait_s),
                                     retry=tenacity.retry_if_exception(_transient), reraise=True)
        self._connection = connection = retrying(self._connect_once)
        return connection

    def _connect_once(self) -> Connection:
        spec, gateway, gateway_key = self.spec, self.spec.gateway, self.spec.gateway_key_file
        self._close_gateway()
        where = f"{spec.label} ({spec.address})"
        if gateway is not None and gateway_key is not None:
            self._gateway = open_verified_connection(
                gateway.host, gateway.port, gateway.user, gateway_key, self.known_hosts,
                timeout_s=spec.connect_timeout_s, where=f"gateway {gateway.address} of {spec.label}")
            where = f"{spec.label} ({spec.address} through the gateway {gateway.address})"
        try:
            return open_verified_connection(spec.host, spec.port, spec.user, spec.key_file, self.known_hosts,
                                            timeout_s=spec.connect_timeout_s, where=where, gateway=self._gateway)
        except BaseException:
            self._close_gateway()
            raise

    def _close_gateway(self) -> None:
        if self._gateway is not None:
            self._gateway.close()
            self._gateway = None

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        self._close_gateway()

    # --- commands and files ----------------------------------------------------------------------

    def run(self, command: str, *, timeout_s: float | None = None, check: bool = True,
            stdin_text: str | None = None) -> CommandResult:
        """Runs a shell command on the host (`stdin_text`: fed to its standard input, e.g. a sudo password).

        Raises:
            RemoteCommandError: non-zero exit (when `check`) or timeout; carries stdout/stderr.
            DeviceUnreachable: the connection broke.
        """
        label = self.spec.label
        timeout = timeout_s if timeout_s is not None else self.spec.command_timeout_s
        timed_out = RemoteCommandError(f"{label}: command timed out after {timeout:.0f} s: {command}",
                                       "check the host's load, or raise command_timeout_s")
        started = time.monotonic()
        try:
            streams = {"in_stream": io.StringIO(stdin_text)} if stdin_text is not None else {}
            result = self.connection.run(command, hide=True, warn=True, timeout=timeout, **streams)
        except CommandTimedOut as error:
            self.close()  # the channel may still be busy: start clean next time
            raise timed_out from error
        except (OSError, EOFError, SSHException) as error:
            self.close()
            raise DeviceUnreachable(f"{label} ({self.spec.address}) dropped the connection: {error}",
                                    "check the host and its network") from error
        if result is None or (result.exited == -1 and time.monotonic() - started >= timeout):
            # The timer closed the channel before the runner noticed (a loaded machine): no exit status came.
            self.close()
            raise timed_out
        if check and result.exited != 0:
            raise RemoteCommandError(
                f"{label}: `{command}` exited {result.exited}: {(result.stderr or result.stdout).strip()[-2000:]}",
                "see the host's message above", exit_code=result.exited, stdout=result.stdout,
                stderr=result.stderr)
        return CommandResult(result.stdout, result.stderr, result.exited)

    def put(self, local: str | os.PathLike[str], remote: str) -> int:
        """Uploads a file (to `remote.part`, then renamed); returns the bytes sent.

        Raises:
            DeviceUnreachable: the connection broke.
        """
        size = Path(local).stat().st_size
        try:
            sftp = self.connection.sftp()
            sftp.get_channel().settimeout(self.spec.command_timeout_s)  # a stalled transfer fails, never hangs
            partial = f"{remote}.part"
            sftp.put(os.fspath(local), partial)
            sftp.posix_rename(partial, remote)
        except (OSError, EOFError, SSHException) as error:
            self.close()
            raise DeviceUnreachable(f"{self.spec.label}: upload of {local} to {remote} failed: {error}",
                                    "check the host's disk and network, then re-run (uploads resume)") from error
        return size

    def get(self, remote: str, local: str | os.PathLike[str]) -> int:
        """Downloads a file; returns the bytes received.

        Raises:
            DeviceUnreachable: the transfer failed (the connection broke, or no such file there).
        """
        try:
            sftp = self.connection.sftp()
            sftp.get_channel().settimeout(self.spec.command_timeout_s)
            sftp.get(remote, os.fspath(local))
        except (OSError, EOFError, SSHException) as error:
            self.close()
            raise DeviceUnreachable(f"{self.spec.label}: download of {remote} failed: {error}",
                                    "check the host's disk and network, then re-run") from error
        return Path(local).stat().st_size

    def write_text(self, remote: str, text: str, mode: int = 0o644) -> None:
        """Writes a small text file on the host (atomically: temp file + rename)."""
        try:
            sftp = self.connection.sftp()
            partial = f"{remote}.part"
            with sftp.open(partial, "w") as handle:
                handle.write(text)
            sftp.chmod(partial, mode)
            sftp.posix_rename(partial, remote)
        except (OSError, EOFError, SSHException) as error:
            self.close()
            raise DeviceUnreachable(f"{self.spec.label}: writing {remote} failed: {error}",
                                    "check the host's disk and permissions") from error


class DeviceConnection(HostConnection[DeviceSpec]):
    """An open SSH connection to one device of the fleet: a host connection plus the device CLI (`agent`)."""

    @property
    def device(self) -> DeviceSpec:
        return self.spec

    def agent(self, *args: str, timeout_s: float | None = None, check: bool = True) -> CommandResult:
        """Runs the device CLI (`agent.agent_command`: as the agent's user when the inventory names one)."""
        return self.run(agent_command(self.spec, *args), timeout_s=timeout_s, check=check)


class DeviceShell(Protocol):
    """What a flow's device steps use: `DeviceConnection`, deploy-agent's sudo wrapper, or a local stand-in."""

    @property
    def device(self) -> DeviceSpec: ...

    def run(self, command: str, *, timeout_s: float | None = None, check: bool = True) -> CommandResult: ...

    def put(self, local: str | Path, remote: str) -> int: ...

    def write_text(self, remote: str, text: str, mode: int = 0o644) -> None: ...


def connect(inventory: Inventory, device: DeviceSpec) -> DeviceConnection:
    """Opens a verified connection to `device` (see `DeviceConnection.open`)."""
    connection = DeviceConnection(device, inventory.known_hosts)
    connection.open()
    return connection
