"""The `device` extra installs from wheels on every (Python, CPU) pair of the Coral hosts people have.

Resolved with the real index by `pip install --dry-run --only-binary=:all: --python-version --platform`, for
Python 3.9 (Raspberry Pi OS Bullseye, Debian 11) to 3.13 and x86_64/aarch64 hosts with glibc 2.31 or newer
(the oldest: Raspberry Pi OS Bullseye and Ubuntu 20.04). Two pip limits are handled here, not papered over:
- pip evaluates environment markers for the Python it runs on, not the target: the requirements are passed with
  their markers evaluated here, for the target (so `eval-type-backport; python_version < '3.10'` counts on 3.9);
- pip does not expand platform tags: every manylinux tag up to the hosts' glibc is listed.
32-bit Raspberry Pi OS (armv7l) has no LiteRT wheel at all: checked too, so the README's claim stays true.
The interpreters themselves run the device tests in .ci/device-pythons (Debian's 3.9 and 3.13).
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement

PYTHONS = ("3.9", "3.10", "3.11", "3.12", "3.13")
CPUS = ("x86_64", "aarch64")
OLDEST_GLIBC = (2, 31)
PIP_TIMEOUT_S = 300
PARALLEL_RESOLVES = 5  # pip waits on the index, not the CPU: the ten resolutions run side by side
HEAVY = {"tensorflow", "tensorflow-cpu", "keras", "prefect", "pulumi", "pulumi-gcp", "fabric", "torch"}

pytestmark = pytest.mark.slow  # asks the package index, ten times


def platform_tags(cpu: str, glibc: tuple[int, int] = OLDEST_GLIBC) -> list[str]:
    """Every manylinux tag a host with this glibc accepts, newest first (PEP 600, with the legacy aliases)."""
    major, newest = glibc
    tags = [f"manylinux_{major}_{minor}_{cpu}" for minor in range(newest, 4, -1)]
    legacy = {"manylinux2014": (2, 17), "manylinux2010": (2, 12), "manylinux1": (2, 5)}
    return tags + [f"{name}_{cpu}" for name, since in legacy.items() if since <= glibc]


def device_requirements(python: str, cpu: str) -> list[str]:
    """The core and `device` requirements of the installed edgefleet, markers evaluated for the target."""
    environment = {**default_environment(), "python_version": python, "python_full_version": f"{python}.0",
                   "platform_machine": cpu, "sys_platform": "linux", "platform_system": "Linux",
                   "implementation_name": "cpython", "platform_python_implementation": "CPython",
                   "extra": "device"}
    chosen = []
    for line in importlib.metadata.requires("edgefleet") or []:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate(environment):
            requirement.marker = None
            chosen.append(str(requirement))
    return chosen


def resolve(requirements: list[str], python: str, platforms: list[str], report: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--disable-pip-version-check", "--only-binary=:all:", "--python-version", python,
               "--implementation", "cp", "--abi", f"cp{python.replace('.', '')}", "--report", str(report)]
    for tag in platforms:
        command += ["--platform", tag]
    return subprocess.run(command + requirements, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)


@pytest.fixture(scope="module")
def resolutions(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], tuple[int, str, Path]]:
    """(python, cpu) -> (pip's exit code, its stderr, its report), every pair resolved once, concurrently."""
    directory = tmp_path_factory.mktemp("resolutions")

    def one(pair: tuple[str, str]) -> tuple[int, str, Path]:
        python, cpu = pair
        report = directory / f"{python}-{cpu}.json"
        result = resolve(device_requirements(python, cpu), python, platform_tags(cpu), report)
        return result.returncode, result.stderr, report

    pairs = [(python, cpu) for python in PYTHONS for cpu in CPUS]
    with ThreadPoolExecutor(PARALLEL_RESOLVES) as pool:
        return dict(zip(pairs, pool.map(one, pairs), strict=True))


@pytest.mark.parametrize("cpu", CPUS)
@pytest.mark.parametrize("python", PYTHONS)
def test_the_device_extra_resolves_to_wheels(python, cpu, resolutions):
    returncode, stderr, report = resolutions[python, cpu]

    assert returncode == 0, f"Python {python} on {cpu}: {stderr[-3000:]}"
    installs = json.loads(report.read_text())["install"]
    names = {item["metadata"]["name"].lower().replace("_", "-") for item in installs}
    assert {"ai-edge-litert", "numpy", "pillow", "pydantic", "cryptography", "google-cloud-pubsub"} <= names
    assert not names & set(HEAVY)
    assert ("eval-type-backport" in names) == (python == "3.9")
    assert all(item["download_info"]["url"].endswith(".whl") for item in installs)


def test_32_bit_raspberry_pi_os_has_no_litert_wheel(tmp_path):
    result = resolve(["ai-edge-litert"], "3.9", platform_tags("armv7l") + ["linux_armv7l"], tmp_path / "r.json")

    assert result.returncode != 0
    assert "ai-edge-litert" in result.stderr
