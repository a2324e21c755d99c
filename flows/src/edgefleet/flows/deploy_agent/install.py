"""deploy-agent's package steps on a device (issue 22): a working virtualenv, the pinned `device` extra, and the
libedgetpu build paired with its runtime.

- The venv: Debian ships `venv`'s ensurepip in `python3-venv`; without it `python3 -m venv` fails half-way and
  leaves a venv without pip, which the next deploy took as installed. Before creating one the device's Python is
  checked (a clear error naming `python3-venv`), and a venv that has no pip or another Python's version (the OS
  was upgraded) is rebuilt.
- The packages: the hashed lock of the device's Python and CPU (`edgefleet.flows.deploy_agent.locks`) with
  `pip install --require-hashes`, from `wheelhouse` (a directory on the device, no index) when given; then the
  project's wheel, whose dependencies the lock already satisfies.
- libedgetpu: the .deb of the paired build, from `libedgetpu_debs` (a directory on the flow's machine), installed
  with apt (its libusb dependency) unless that version is installed; without it, a build known to crash with the
  runtime is reported in the result.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from edgefleet.flows.deploy_agent.locks import (
    PLATFORM_COMMAND,
    EdgeTpuPair,
    EdgeTpuPins,
    load_pins,
    lock_for,
    parse_platform,
)
from edgefleet.flows.fleet.connection import DeviceShell
from edgefleet.kernel.errors import ConfigError, EdgefleetError

VENV_PACKAGE = "python3-venv"
OS_RELEASE = "/etc/os-release"
_SAME_PYTHON = "import sys; print('%d.%d' % sys.version_info[:2])"
q = shlex.quote


def venv_healthy_command(python: str, venv: str) -> str:
    """Exits 0 when `venv` runs, has pip, and is of the same Python version as `python`."""
    same = q(_SAME_PYTHON)
    return (f'[ -x {q(venv)}/bin/python ] && {q(venv)}/bin/python -c "import pip" 2>/dev/null && '
            f'[ "$({q(venv)}/bin/python -c {same})" = "$({q(python)} -c {same})" ]')


def ensure_venv(connection: DeviceShell, python: str, venv: str, *, system_site_packages: bool,
                timeout_s: float) -> str:
    """Keeps a healthy venv, else (re)creates it; returns 'kept', 'created' or 'rebuilt'.

    Raises:
        ConfigError: the device's Python cannot create virtualenvs (names the package to install).
    """
    if connection.run(venv_healthy_command(python, venv), check=False).exit_code == 0:
        return "kept"
    support = connection.run(f"{q(python)} -c 'import ensurepip, venv'", check=False)
    if support.exit_code != 0:
        raise ConfigError(f"device {connection.device.id}: {python} cannot create a virtualenv (no ensurepip: "
                          f"{support.stderr.strip()[-200:]})",
                          f"install Debian's {VENV_PACKAGE} package there (sudo apt-get install {VENV_PACKAGE}) and "
                          "run deploy-agent again")
    existed = connection.run(f"test -e {q(venv)}", check=False).exit_code == 0
    flags = " --system-site-packages" if system_site_packages else ""
    connection.run(f"rm -rf {q(venv)} && {q(python)} -m venv{flags} {q(venv)}", timeout_s=timeout_s)
    return "rebuilt" if existed else "created"


def pip_install(venv: str, wheelhouse: str | None) -> str:
    """The venv's `pip install`, offline from `wheelhouse` when given."""
    offline = f" --no-index --find-links {q(wheelhouse)}" if wheelhouse else ""
    return f"{q(venv)}/bin/python -m pip install --quiet --disable-pip-version-check{offline}"


def lock_install_command(venv: str, lock: str, wheelhouse: str | None) -> str:
    """Installs a hashed lock: every wheel must match one of its sha256 hashes, nothing unpinned comes in."""
    return f"{pip_install(venv, wheelhouse)} --require-hashes --only-binary :all: -r {q(lock)}"


def install_lock(connection: DeviceShell, python: str, install_dir: str, venv: str, wheelhouse: str | None,
                 timeout_s: float) -> tuple[str, str]:
    """Uploads and installs the lock of the device's Python and CPU; returns (Python X.Y, machine).

    Raises:
        ConfigError: no lock for that Python and CPU.
    """
    python_version, machine = parse_platform(connection.run(f"{q(python)} -c {q(PLATFORM_COMMAND)}").stdout)
    lock = lock_for(python_version, machine)
    remote = f"{install_dir}/locks/{lock.name}"
    connection.run(f"mkdir -p {q(install_dir)}/locks")
    connection.write_text(remote, lock.read_text())
    connection.run(lock_install_command(venv, remote, wheelhouse), timeout_s=timeout_s)
    return python_version, machine


def pick_deb(pair: EdgeTpuPair, machine: str, names: list[str], distributions: tuple[str, ...] = ()) -> str | None:
    """The paired build's .deb for a CPU among `names`: the one built for the host's distribution (a suffix in
    `distributions`, see `host_distributions`), else the only build there is; None when there is none, or
    several for other distributions (which of them runs on this host is unknown)."""
    pattern = pair.deb_name(machine)
    found = {name: match["distribution"] for name in sorted(names) if (match := pattern.fullmatch(name))}
    own = [name for name, distribution in found.items() if distribution in distributions]
    if own:
        return own[0]
    return next(iter(found)) if len(found) == 1 else None


def host_distributions(connection: DeviceShell, os_release: str = OS_RELEASE) -> tuple[str, ...]:
    """How .deb file names may name the host's distribution, from its os-release: `<ID><VERSION_ID>` and
    `<VERSION_CODENAME>` (e.g. `ubuntu24.04`, `noble`; `debian12`, `bookworm`); () when it has none."""
    script = f'. {q(os_release)} && printf "%s%s\\n%s\\n" "$ID" "$VERSION_ID" "$VERSION_CODENAME"'
    result = connection.run(f"( {script} ) 2>/dev/null || true", check=False)
    return tuple(line.strip().lower() for line in result.stdout.splitlines() if line.strip())


def installed_versions(connection: DeviceShell, packages: tuple[str, ...]) -> dict[str, str]:
    """The installed version of each of `packages` that dpkg has."""
    format_ = q("${Package} ${Version} ${db:Status-Status}\\n")
    result = connection.run(f"dpkg-query -W -f={format_} {' '.join(q(p) for p in packages)} 2>/dev/null || true",
                            check=False)
    found = (line.split() for line in result.stdout.splitlines())
    return {fields[0]: fields[1] for fields in found if len(fields) == 3 and fields[2] == "installed"}


def ensure_libedgetpu(connection: DeviceShell, python_version: str, machine: str, debs_dir: Path | None,
                      install_dir: str, pins: EdgeTpuPins | None = None) -> str:
    """Installs the libedgetpu paired with this Python's runtime when `debs_dir` is given; returns a note for the
    deploy result ('' when the paired build is there).

    Raises:
        EdgefleetError: `debs_dir` lacks the build for this CPU, or apt did not install that version.
    """
    pins = pins or load_pins()
    pair = pins.for_python(python_version)
    if pair is None:
        return f"; no libedgetpu is paired with Python {python_version}'s runtime (the Edge TPU is probed)"
    installed = installed_versions(connection, (pair.libedgetpu_package, *pins.refused))
    if installed.get(pair.libedgetpu_package) == pair.libedgetpu_version:
        return ""
    if debs_dir is None:
        crashing = [f"{name} {version}" for name, version in installed.items()
                    if version in pins.refused.get(name, ())]
        return (f"; {', '.join(crashing)} crashes with {pair.runtime_package}: give libedgetpu_debs with "
                f"{pair.libedgetpu_package} {pair.libedgetpu_version}" if crashing else "")
    distributions = host_distributions(connection)
    name = pick_deb(pair, machine, [path.name for path in debs_dir.iterdir()], distributions)
    if name is None:
        host = "/".join(distributions) or "unknown distribution"
        raise EdgefleetError(f"{debs_dir} has no {pair.libedgetpu_package} {pair.libedgetpu_version} .deb for "
                             f"{machine} on {host} (device {connection.device.id})",
                             f"put the release's file matching {pair.deb_name(machine).pattern} there, the one "
                             f"built for {host} when there are several ({pair.source})")
    remote = f"{install_dir}/debs/{name}"
    connection.run(f"mkdir -p {q(install_dir)}/debs")
    connection.put(debs_dir / name, remote)
    connection.run(f"DEBIAN_FRONTEND=noninteractive apt-get install -y -q --allow-downgrades {q(remote)}",
                   timeout_s=600)
    now = installed_versions(connection, (pair.libedgetpu_package,)).get(pair.libedgetpu_package)
    if now != pair.libedgetpu_version:
        raise EdgefleetError(f"device {connection.device.id}: {pair.libedgetpu_package} is {now} after installing "
                             f"{name}", "install the .deb by hand there to see apt's error")
    return f"; {pair.libedgetpu_package} {pair.libedgetpu_version} installed"
