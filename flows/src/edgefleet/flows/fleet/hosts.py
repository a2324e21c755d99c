"""The hosts the project reaches over SSH, typed: what every SSH host has (`SshHost`), a bastion
(`GatewaySpec`), and the compile host (`CompileHostSpec`). A device (`inventory.DeviceSpec`) is an `SshHost`
too; all of them go through `connection.open_verified_connection`, their host keys checked against known_hosts.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from edgefleet.flows.fleet.device_values import HostName, LoginName

DEFAULT_SSH_PORT = 22


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GatewaySpec(Strict):
    """A bastion (SSH jump host, OpenSSH's ProxyJump) the host is reached through: one hop, its host key
    checked against the same known_hosts as the host's."""

    host: HostName = Field(description="the bastion's host name or address")
    port: int = Field(default=DEFAULT_SSH_PORT, ge=1, le=65535)
    user: LoginName = Field(default="root")
    key_file: Path | None = Field(default=None, description="SSH private key for the bastion; empty: the host's")

    @property
    def address(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


class SshHost(Strict):
    """How to reach one host over SSH: address, login key (no passwords), bastion and timeouts."""

    host: HostName = Field(description="host name or address")
    port: int = Field(default=DEFAULT_SSH_PORT, ge=1, le=65535)
    user: LoginName = Field(default="root")
    key_file: Path = Field(description="SSH private key used to log in (no passwords)")
    gateway: GatewaySpec | None = Field(default=None, description="a bastion the host is reached through "
                                        "(ProxyJump); empty: connect directly")
    connect_timeout_s: int = Field(default=10, ge=1, description="TCP connect + SSH banner/auth timeout")
    connect_attempts: int = Field(default=2, ge=1, description="tries before a host counts as unreachable")
    connect_retry_wait_s: float = Field(default=0.5, ge=0, description="pause between two connection tries")
    command_timeout_s: float = Field(default=120.0, gt=0, description="longest one remote command may run")

    @property
    def label(self) -> str:
        """How messages name the host (`device cam-1`, `compile host builder`)."""
        return f"host {self.host}"

    @property
    def address(self) -> str:
        """`user@host:port`, for messages."""
        return f"{self.user}@{self.host}:{self.port}"

    @property
    def gateway_key_file(self) -> Path | None:
        """The key the bastion is logged into with (its own, else the host's); None without a bastion."""
        return None if self.gateway is None else self.gateway.key_file or self.key_file


class CompileHostSpec(SshHost):
    """The x86-64 Linux host that runs `edgetpu_compiler` for the release flow (`compile.mode: ssh`)."""

    connect_attempts: int = Field(default=1, ge=1, description="a release fails fast on an unreachable compile host")

    @property
    def label(self) -> str:
        return f"compile host {self.host}"
