"""deploy-agent from a normal SSH login with sudo, and the agent as its own unprivileged system user.

Raspberry Pi OS and Ubuntu disable root login over SSH: the flow logs in as the inventory's user and runs its
device steps as root through `sudo` (`sudo -n`: passwordless; or `sudo -S` with the password from a Prefect
Secret block on standard input, never on a command line). With `agent_user`, it creates that system user in
the groups that reach the Edge TPU (plugdev for USB, apex for PCIe, where they exist), gives it the agent root,
and keeps the release public key and the config root's: the agent cannot rewrite its own trust anchor.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from edgefleet.flows.deploy_agent.device_access import TPU_GROUPS
from edgefleet.flows.fleet.connection import CommandResult, DeviceConnection, RemoteCommandError
from edgefleet.flows.fleet.inventory import DeviceSpec
from edgefleet.kernel.contracts.layout import INCOMING_DIR
from edgefleet.kernel.errors import ConfigError, EdgefleetError

NOLOGIN = "/usr/sbin/nologin"
_SUDOERS_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
_SUDOERS_COMMAND = re.compile(r"/[A-Za-z0-9_./+-]+")


class SudoFailed(EdgefleetError):
    """sudo refused to run the deploy's commands as root."""


class SudoConnection:
    """The `DeviceConnection` operations deploy-agent uses (run, put, write_text), each done as root via sudo."""

    def __init__(self, connection: DeviceConnection, password: str | None) -> None:
        self._connection = connection
        self._password = password
        self._staging: str | None = None

    @property
    def device(self) -> DeviceSpec:
        return self._connection.device

    def run(self, command: str, *, timeout_s: float | None = None, check: bool = True) -> CommandResult:
        if self._password is None:
            wrapped, stdin = f"sudo -n sh -c {shlex.quote(command)}", None
        else:
            wrapped, stdin = f"sudo -S -p '' sh -c {shlex.quote(command)}", self._password + "\n"
        try:
            result = self._connection.run(wrapped, timeout_s=timeout_s, check=check, stdin_text=stdin)
        except RemoteCommandError as error:
            self._refused(error.stderr)
            raise
        self._refused(result.stderr)
        return result

    def _refused(self, stderr: str) -> None:
        """Raises SudoFailed when `stderr` says sudo refused (rather than the command failing)."""
        if any(mark in stderr for mark in ("a password is required", "incorrect password",
                                            "is not in the sudoers file", "may not run sudo")):
            raise SudoFailed(f"device {self.device.id}: sudo refused {self.device.user}: {stderr.strip()}",
                             "allow this user sudo on the device (passwordless, or give its password in a Prefect "
                             "Secret block named by sudo_password_secret)")

    def _staging_dir(self) -> str:
        if self._staging is None:
            self._staging = self._connection.run("mktemp -d").stdout.strip()
        return self._staging

    def put(self, local: str | Path, remote: str) -> int:
        staged = f"{self._staging_dir()}/{Path(local).name}"
        size = self._connection.put(local, staged)
        self.run(f"mv {shlex.quote(staged)} {shlex.quote(remote)}")
        return size

    def write_text(self, remote: str, text: str, mode: int = 0o644) -> None:
        staged = f"{self._staging_dir()}/{Path(remote).name}"
        self._connection.write_text(staged, text, mode=0o600)
        self.run(f"install -m {mode:o} {shlex.quote(staged)} {shlex.quote(remote)} && rm -f {shlex.quote(staged)}")

    def close(self) -> None:
        if self._staging is not None:
            self._connection.run(f"rm -rf {shlex.quote(self._staging)}", check=False)


def create_user_command(user: str, home: str, groups: tuple[str, ...] = TPU_GROUPS) -> str:
    """Creates the agent's system user (idempotent) and adds it to the groups that exist of `groups` (the TPU's;
    a camera's too when the source is one: device_access)."""
    u = shlex.quote(user)
    join = "".join(f"if getent group {g} >/dev/null; then usermod -aG {g} {u}; fi; " for g in groups)
    return (f"id -u {u} >/dev/null 2>&1 || useradd --system --user-group --home-dir {shlex.quote(home)} "
            f"--no-create-home --shell {NOLOGIN} {u}; {join}true")


def ownership_command(user: str, root: str, login_user: str) -> str:
    """The agent owns its root (models, status, spool, its own key: nothing of root's lives there; the config and
    trust anchor are in the root-owned config directory); the rollout's staging area belongs to the SSH login
    user (who uploads there). Only what is not the agent's yet is changed, without following symbolic links
    (`chown -h`), and files the agent's user creates or removes meanwhile do not fail the deploy."""
    u, r = shlex.quote(user), shlex.quote(root)
    return (f"chown {u}: {r} && find {r} -ignore_readdir_race ! -user {u} "
            f"-exec chown -h {u}: {{}} \\; && install -d -o {shlex.quote(login_user)} {r}/{INCOMING_DIR}")


def as_agent_user(user: str | None, command: str) -> str:
    """`command` run as the agent's user (from root: setpriv, as the process manager does); unchanged for None."""
    if user is None:
        return command
    u = shlex.quote(user)
    return (f"setpriv --reuid={u} --regid=\"$(id -g {u})\" --init-groups -- sh -c {shlex.quote(command)}")


def sudoers_rule(login_user: str, agent_user: str, agent_command: str) -> tuple[str, str]:
    """(path, text) of the sudoers rule that lets the rollout run the device CLI, and only it, as the agent's
    user without a password (`DeviceConnection.agent` runs `sudo -n -u AGENT_USER edgefleet-agent ...`).

    Raises:
        ConfigError: a value that would change the rule (a newline adds another; sudoers' special characters).
    """
    for what, value, pattern in (("login user", login_user, _SUDOERS_USER), ("agent_user", agent_user, _SUDOERS_USER),
                                 ("agent command", agent_command, _SUDOERS_COMMAND)):
        if not pattern.fullmatch(value):
            raise ConfigError(f"{what} {value!r} cannot go into a sudoers rule (only letters, digits and ._-/ "
                              "are safe there; a newline would add a rule)", "fix the deploy-agent parameters")
    # Named to sort last (sudo applies the last matching rule, files in lexical order); no dot (sudo skips those).
    path = f"/etc/sudoers.d/zz-edgefleet-agent-{login_user.replace('.', '_')}"
    return path, f"{login_user} ALL=({agent_user}) NOPASSWD: {agent_command}\n"


def sudo_password(secret_block: str | None) -> str | None:
    """The sudo password from a Prefect Secret block, or None (passwordless sudo)."""
    if secret_block is None:
        return None
    from prefect.blocks.system import Secret

    try:
        secret = Secret.load(secret_block)
    except ValueError as error:
        raise EdgefleetError(f"no Prefect Secret block named {secret_block!r}: {error}",
                             "create it (prefect block create secret, or Secret(value=...).save(name)) or set "
                             "sudo_password_secret to null for passwordless sudo") from error
    if not isinstance(secret, Secret):  # a coroutine only when called from async code; deploy-agent's tasks are sync
        raise TypeError("sudo_password is called from synchronous code only")
    return str(secret.get())
