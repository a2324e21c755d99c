"""Typed strings for every value that reaches a device (a shell command, a file root reads, a unit, sudoers).

Prefect parameters and fleet.yaml are input from whoever can start a flow run or edit the inventory; on the
device they become root's files and commands. Quoting is not enough (a `.pth` line starting with `import`
runs at the next interpreter start; a newline in a path adds a sudoers rule that `visudo -c` accepts), so
each value is validated as what it is, with an error naming the value and the fix:

    DevicePath     an absolute, normalised path of letters, digits and ._@+- (no spaces, no control characters)
    AgentRootPath  a DevicePath, or `~` / `~/...` (expanded by the login's shell)
    UnixName       a user or group name, as useradd and systemd accept it
    LoginName      an SSH login name (a UnixName that may also have capitals and dots)
    CommandName    a program on PATH (python3) or a DevicePath
    EnvName        an environment variable's name; EnvValue its value (no newline, quote, backslash, $ or `)
    PipExtras      pip extras, comma-separated names (`device`, `device,video`)
    HostName       a host name or IP address
"""

from __future__ import annotations

import posixpath
import re
from typing import Annotated

from pydantic import AfterValidator

_PATH = re.compile(r"/[A-Za-z0-9._@+/-]*")
_UNIX_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_LOGIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
_COMMAND = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ENV_FORBIDDEN = set("\"\\$`")
_EXTRAS = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(,[A-Za-z0-9][A-Za-z0-9._-]*)*")
_HOST = re.compile(r"[A-Za-z0-9._:%-]+")
PATH_CHARACTERS = "letters, digits and ._@+-"


def check_device_path(value: str, what: str = "device path") -> str:
    """`value` if it is an absolute, normalised path of safe characters, else ValueError naming `what`."""
    if not _PATH.fullmatch(value):
        raise ValueError(f"{what} {value!r} must be an absolute path of {PATH_CHARACTERS} (no spaces, newlines "
                         "or other control characters; a value that reaches a device is never guessed at)")
    if posixpath.normpath(value) != value or value.startswith("//"):
        raise ValueError(f"{what} {value!r} is not normalised: write it as {posixpath.normpath(value)!r} "
                         "(no '..', '.', '//' or trailing '/')")
    return value


def check_agent_root(value: str) -> str:
    """A DevicePath, or `~` / `~/<relative path of safe characters>`."""
    if value == "~":
        return value
    if value.startswith("~/"):
        check_device_path(value[1:], "agent_root")
        return value
    return check_device_path(value, "agent_root")


def _pattern(pattern: re.Pattern[str], what: str, rule: str):  # noqa: ANN202 - a validator factory
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"{what} {value!r} is not valid: {rule}")
        return value
    return check


def check_command(value: str) -> str:
    """A program name found on PATH (`python3`), or an absolute path."""
    if value.startswith("/"):
        return check_device_path(value, "command")
    if not _COMMAND.fullmatch(value):
        raise ValueError(f"command {value!r} is not valid: a program name ({PATH_CHARACTERS}) or an absolute path")
    return value


def check_env_value(value: str) -> str:
    """An environment value both systemd's EnvironmentFile= and `sh` read the same way."""
    if any(ord(char) < 32 or ord(char) == 127 for char in value) or _ENV_FORBIDDEN & set(value):
        raise ValueError(f"environment value {value!r} has a control character (newline), quote, backslash, $ or "
                         "backtick: such values cannot be written safely for both systemd and sh; put them in the "
                         "agent config instead")
    return value


DevicePath = Annotated[str, AfterValidator(check_device_path)]
AgentRootPath = Annotated[str, AfterValidator(check_agent_root)]
UnixName = Annotated[str, AfterValidator(_pattern(
    _UNIX_NAME, "user/group name", "1-32 lowercase letters, digits, '_' or '-', starting with a letter or '_'"))]
LoginName = Annotated[str, AfterValidator(_pattern(
    _LOGIN_NAME, "login name", "1-32 letters, digits, '_', '.' or '-', starting with a letter or '_'"))]
CommandName = Annotated[str, AfterValidator(check_command)]
EnvName = Annotated[str, AfterValidator(_pattern(
    _ENV_NAME, "environment variable name", "letters, digits and '_', not starting with a digit"))]
EnvValue = Annotated[str, AfterValidator(check_env_value)]
PipExtras = Annotated[str, AfterValidator(lambda value: value if value == "" else _pattern(
    _EXTRAS, "pip extras", "comma-separated names of letters, digits and ._- (e.g. device,video)")(value))]
HostName = Annotated[str, AfterValidator(_pattern(
    _HOST, "host", "a host name or IP address (letters, digits and .:-%)"))]
