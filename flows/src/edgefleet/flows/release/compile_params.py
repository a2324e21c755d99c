"""Where `edgetpu_compiler` runs, one model per mode: here (`local`), on a compile host (`ssh`), or not at all
(`off`). `CompileParams` is their discriminated union on `mode`, so a key of another mode (`host` with
`mode: local`) fails when the release config is read, naming the key and the fix. A `compile:` section
without `mode` is `local`, as before the union.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgefleet.kernel.configfile import tag_required, tagged_union

DEFAULT_COMPILER = "edgetpu_compiler"


class _Compile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Compiler(_Compile):
    compiler: str = Field(
        default=DEFAULT_COMPILER,
        description="Path or name (on PATH) of edgetpu_compiler, here or on the compile host",
    )
    timeout_s: float = Field(default=600.0, gt=0, description="Longest a compilation may take")
    require: bool = Field(
        default=False,
        description="Fail the release when the compiler is not available instead of "
        "shipping the CPU model alone",
    )


class CompileLocal(_Compiler):
    """Run `compiler` on this machine (x86-64 Linux)."""

    mode: Literal["local"] = Field(
        default="local",
        description="local: run `compiler` here; ssh: run it on `host` (x86-64 Linux) over SSH; off: ship "
        "the CPU model only",
    )


class CompileSsh(_Compiler):
    """Run `compiler` on a compile host (x86-64 Linux) over SSH; its key must be in `known_hosts`."""

    model_config = ConfigDict(json_schema_extra=tag_required("mode"))

    mode: Literal["ssh"] = Field(default="ssh", description="ssh: run `compiler` on `host` over SSH")
    host: str | None = Field(default=None, description="ssh mode: compile host, e.g. builder.example.com")
    user: str | None = Field(default=None, description="ssh mode: user on the compile host")
    port: int = Field(default=22, ge=1, le=65535, description="ssh mode: SSH port")
    key_file: str | None = Field(default=None, description="ssh mode: private key file for the compile host")
    known_hosts: str = Field(
        default="~/.ssh/known_hosts",
        description="ssh mode: known_hosts holding the compile host's key (unknown or changed keys are refused)",
    )
    connect_timeout_s: float = Field(default=20.0, gt=0, description="ssh mode: connection timeout")

    @model_validator(mode="after")
    def _host_for_ssh(self) -> CompileSsh:
        if not self.host:
            raise ValueError("compile.mode 'ssh' needs compile.host (the compile host to reach over SSH)")
        return self


class CompileOff(_Compile):
    """No Edge TPU variant: the CPU model ships alone. `compiler`, `timeout_s` and `require: false` are
    accepted and unused, so a config switched to `mode: off` still reads."""

    model_config = ConfigDict(json_schema_extra=tag_required("mode"))

    mode: Literal["off"] = Field(default="off", description="off: ship the CPU model only")
    compiler: str = Field(default=DEFAULT_COMPILER, description="unused when off")
    timeout_s: float = Field(default=600.0, gt=0, description="unused when off")
    require: bool = Field(default=False, description="must stay false when off")

    @model_validator(mode="after")
    def _nothing_required(self) -> CompileOff:
        if self.require:
            raise ValueError("compile.require: true contradicts compile.mode off (nothing is compiled): set "
                             "compile.mode: local or ssh, or remove compile.require")
        return self


if TYPE_CHECKING:  # what a checker reads; at run time the annotated union below, which pydantic validates
    CompileParams = CompileLocal | CompileSsh | CompileOff
else:
    CompileParams = tagged_union(CompileLocal, CompileSsh, CompileOff, tag="mode", where="compile",
                                 default="local", aliases={False: "off"})
"""The `compile:` section of a release: `CompileLocal` | `CompileSsh` | `CompileOff`, by `mode`."""
