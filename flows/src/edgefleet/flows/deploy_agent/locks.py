"""Pinned device installs (issue 22, item 8): a hashed lock of the `device` extra per (Python, CPU), and the
libedgetpu build that matches the runtime the lock pins.

Every device used to resolve ~50 unpinned wheels from the registry at install time. deploy-agent now installs
`flows/locks/device-py<X.Y>-<arch>.txt` with `pip install --require-hashes` (from a wheelhouse directory on
the device when offline), then the project's wheel alone. The locks are made by `make device-locks`
(`python -m edgefleet.flows.deploy_agent.locks`, uv's resolver for each target Python and manylinux_2_31,
the glibc of Debian 11, the oldest supported host); tests/flows/deploy_agent/test_locks.py checks each is hashed
and satisfies pyproject's `device` extra. The libedgetpu/runtime pairs are data: `flows/locks/edgetpu-pairs.toml`.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from edgefleet.kernel.errors import ConfigError

LOCK_PYTHONS = ("3.9", "3.10", "3.11", "3.12", "3.13")
LOCK_ARCHES = ("x86_64", "aarch64")
MANYLINUX = "manylinux_2_31"  # glibc 2.31: Debian 11 / Raspberry Pi OS Bullseye, the oldest supported host
LOCK_EXTRA = "device"
PAIRS_FILE = "edgetpu-pairs.toml"
DPKG_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
_PLATFORM = re.compile(r"^(\d+\.\d+) (\S+)$")
PLATFORM_COMMAND = "import platform, sys; print('%d.%d %s' % (sys.version_info[:2] + (platform.machine(),)))"
"""Run by the device's Python: prints e.g. `3.11 aarch64`."""


class EdgeTpuPair(BaseModel):
    """A libedgetpu build and the runtime built from the same TensorFlow, for the Pythons that runtime has."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    libedgetpu_package: str
    libedgetpu_version: str
    tensorflow: str
    runtime_package: str
    runtime_version: str
    pythons: tuple[str, ...]
    source: str

    def deb_name(self, arch: str) -> re.Pattern[str]:
        """The file names of this build's .deb for a CPU, with or without a distribution suffix (`.bookworm`,
        `.ubuntu24.04`: group `distribution`). The suffix starts with a letter, so a later revision of the
        version (`...-1.1`) is not taken for this one."""
        return re.compile(rf"{re.escape(self.libedgetpu_package)}_{re.escape(self.libedgetpu_version)}"
                          rf"(\.(?P<distribution>[a-z][a-z0-9.+~]*))?_{re.escape(DPKG_ARCH.get(arch, arch))}\.deb")


class EdgeTpuPins(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    pair: tuple[EdgeTpuPair, ...]
    refused: dict[str, tuple[str, ...]]

    def for_python(self, python: str) -> EdgeTpuPair | None:
        return next((pair for pair in self.pair if python in pair.pythons), None)


def locks_dir() -> Path:
    return Path(str(resources.files("edgefleet.flows").joinpath("locks")))


def load_pins(directory: Path | None = None) -> EdgeTpuPins:
    """The libedgetpu/runtime pairs (flows/src/edgefleet/flows/locks/edgetpu-pairs.toml)."""
    path = (directory or locks_dir()) / PAIRS_FILE
    return EdgeTpuPins.model_validate(tomllib.loads(path.read_text()))


def lock_name(python: str, arch: str) -> str:
    return f"{LOCK_EXTRA}-py{python}-{arch}.txt"


def parse_platform(output: str) -> tuple[str, str]:
    """(Python `X.Y`, machine) from PLATFORM_COMMAND's output.

    Raises:
        ConfigError: not its output.
    """
    found = _PLATFORM.match(output.strip())
    if found is None:
        raise ConfigError(f"cannot read the device's Python version and CPU from {output.strip()[:200]!r}",
                          "check the `python` parameter (the device's Python 3 command)")
    return found.group(1), found.group(2)


def lock_for(python: str, arch: str, directory: Path | None = None) -> Path:
    """The lock for a device's Python and CPU.

    Raises:
        ConfigError: none ships for it (names those that do, and the way out).
    """
    path = (directory or locks_dir()) / lock_name(python, arch)
    if not path.is_file():
        raise ConfigError(f"no pinned install for Python {python} on {arch} (locks: Python "
                          f"{', '.join(LOCK_PYTHONS)} on {', '.join(LOCK_ARCHES)}; 32-bit ARM has no LiteRT wheel)",
                          "use a supported Python / 64-bit OS on the device, or set `locked: false` to let pip "
                          "resolve unpinned")
    return path


UV = (sys.executable, "-m", "uv")


def compile_command(project: Path, python: str, arch: str, constraints: Path | None,
                    uv: tuple[str, ...] = UV) -> list[str]:
    """uv's resolution of pyproject's `device` extra for one target, with sha256 hashes."""
    command = [*uv, "pip", "compile", str(project / "device" / "pyproject.toml"), "--extra", LOCK_EXTRA,
               "--generate-hashes", "--only-binary", ":all:", "--python-version", python,
               "--python-platform", f"{arch}-{MANYLINUX}", "--no-header", "--quiet"]
    return command + (["--constraint", str(constraints)] if constraints else [])


def lock_header(python: str, arch: str, pair: EdgeTpuPair | None) -> str:
    paired = (f"{pair.runtime_package}=={pair.runtime_version} is paired with {pair.libedgetpu_package} "
              f"{pair.libedgetpu_version} (TensorFlow {pair.tensorflow})" if pair else
              "no libedgetpu build is paired with the runtime this Python gets (see edgetpu-pairs.toml)")
    return (f"# The `{LOCK_EXTRA}` extra for CPython {python} on {arch} ({MANYLINUX}), hashed: deploy-agent installs "
            f"it with\n# pip install --require-hashes. Made by `make device-locks`; do not edit.\n# {paired}\n")


def write_locks(project: Path, directory: Path, uv: tuple[str, ...] = UV, pythons: tuple[str, ...] = LOCK_PYTHONS,
                arches: tuple[str, ...] = LOCK_ARCHES) -> list[Path]:
    """Resolves and writes every lock (needs uv: `pip install uv`)."""
    pins = load_pins(directory)
    written = []
    for python in pythons:
        pair = pins.for_python(python)
        constraints = directory / ".constraints.txt"
        constraints.write_text(f"{pair.runtime_package}=={pair.runtime_version}\n" if pair else "")
        for arch in arches:
            done = subprocess.run(compile_command(project, python, arch, constraints, uv), capture_output=True,
                                  text=True, check=False)
            if done.returncode != 0:
                raise ConfigError(f"resolving Python {python} on {arch} failed: {done.stderr.strip()[-2000:]}",
                                  "fix pyproject's device extra or edgetpu-pairs.toml")
            path = directory / lock_name(python, arch)
            path.write_text(lock_header(python, arch, pair) + done.stdout)
            written.append(path)
        constraints.unlink()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the hashed device locks (flows/src/edgefleet/flows/locks/).")
    parser.add_argument("--project", type=Path, default=Path.cwd(), help="the edgefleet source tree")
    parser.add_argument("--uv", default=None, help="the uv executable (default: python -m uv)")
    args = parser.parse_args(argv)
    uv = (args.uv,) if args.uv else UV
    written = write_locks(args.project, args.project / "flows/src/edgefleet/flows" / "locks", uv)
    sys.stdout.write("".join(f"{path}\n" for path in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
