"""The device installs are pinned (issue 22, item 8): every (Python, CPU) deploy-agent supports has a lock in
which every requirement is pinned with sha256 hashes (so `pip install --require-hashes` accepts it) and which
satisfies pyproject's core dependencies and `device` extra for that Python, the runtime pinned to the version
its libedgetpu was built for."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from edgefleet.flows.deploy_agent.locks import (
    LOCK_ARCHES,
    LOCK_EXTRA,
    LOCK_PYTHONS,
    load_pins,
    lock_for,
    locks_dir,
    parse_platform,
)
from edgefleet.kernel.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]
TARGETS = [(python, arch) for python in LOCK_PYTHONS for arch in LOCK_ARCHES]
_PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)")


def _entries(text: str) -> list[str]:
    """The lock's requirements, each with its hash options (continuation lines joined, comments dropped)."""
    joined = re.sub(r"\\\n", " ", text)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _pins(text: str) -> dict[str, str]:
    return {canonicalize_name(found.group(1)): found.group(2)
            for found in (_PIN.match(entry) for entry in _entries(text)) if found}


def _wanted(python: str, arch: str) -> list[Requirement]:
    project = tomllib.loads((REPO / "device" / "pyproject.toml").read_text())["project"]
    environment = {"python_version": python, "python_full_version": f"{python}.0", "platform_machine": arch,
                   "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
                   "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
    requirements = [Requirement(text) for text in
                    project["dependencies"] + project["optional-dependencies"].get(LOCK_EXTRA, [])]
    return [req for req in requirements if req.marker is None or req.marker.evaluate(environment)]


@pytest.mark.parametrize(("python", "arch"), TARGETS)
def test_every_lock_is_pinned_and_hashed(python, arch):
    entries = _entries(lock_for(python, arch).read_text())

    assert len(entries) > 10
    for entry in entries:
        assert _PIN.match(entry), f"not pinned with ==: {entry[:80]}"
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", entry), f"no sha256 hash: {entry[:80]}"
        assert not re.search(r"(^|\s)(-e|--editable|--index-url|--extra-index-url|file:|https?://)", entry), entry


@pytest.mark.parametrize(("python", "arch"), TARGETS)
def test_every_lock_satisfies_the_device_extra_and_pins_the_paired_runtime(python, arch):
    pins = _pins(lock_for(python, arch).read_text())

    for requirement in _wanted(python, arch):
        pinned = pins.get(canonicalize_name(requirement.name))
        assert pinned is not None, f"{requirement} is missing from Python {python}'s lock on {arch}"
        assert requirement.specifier.contains(pinned, prereleases=True), f"{requirement} but the lock pins {pinned}"
    pair = load_pins().for_python(python)
    if pair is not None:
        assert pins[canonicalize_name(pair.runtime_package)] == pair.runtime_version


def test_the_pairs_name_a_rebuilt_libedgetpu_never_a_refused_one():
    pins = load_pins()

    assert pins.pair and all(pair.pythons for pair in pins.pair)
    for pair in pins.pair:
        assert pair.libedgetpu_version not in pins.refused.get(pair.libedgetpu_package, ())
        assert f"tf{pair.tensorflow}" in pair.libedgetpu_version  # built against the runtime's TensorFlow
        assert pair.deb_name("aarch64").fullmatch(f"{pair.libedgetpu_package}_{pair.libedgetpu_version}"
                                                  ".bookworm_arm64.deb")
    assert "16.0" in pins.refused["libedgetpu1-std"]  # Coral's apt package: TensorFlow 2.5, crashes with LiteRT


def test_no_lock_for_32_bit_arm_says_what_to_do_instead():
    with pytest.raises(ConfigError) as refused:
        lock_for("3.11", "armv7l")

    assert "32-bit ARM" in refused.value.message and "64-bit OS" in refused.value.fix


def test_the_device_platform_is_read_from_its_python():
    assert parse_platform("3.11 aarch64\n") == ("3.11", "aarch64")
    with pytest.raises(ConfigError, match="Python version and CPU"):
        parse_platform("python3: command not found")


def test_the_locks_ship_in_the_package_beside_the_pairs():
    assert {path.name for path in locks_dir().glob("*.txt")} == {f"{LOCK_EXTRA}-py{p}-{a}.txt" for p, a in TARGETS}
