"""deploy-agent's package steps on a device (issue 22): the venv preflight names `python3-venv`, a venv left
broken is rebuilt, the lock installs with `--require-hashes` (offline from a wheelhouse), and libedgetpu is
the build paired with the runtime.

The steps run here through `LocalConnection` (the device's shell commands on this machine) with a real Python
and pip; a Python without ensurepip (Debian's without python3-venv) is this one with ensurepip hidden.
"""

from __future__ import annotations

import base64
import hashlib
import os
import sys
import zipfile
from pathlib import Path

import pytest
from local_device import LocalConnection

from edgefleet.flows.deploy_agent.install import (
    ensure_libedgetpu,
    ensure_venv,
    host_distributions,
    lock_install_command,
    pick_deb,
)
from edgefleet.flows.deploy_agent.locks import load_pins
from edgefleet.flows.fleet.connection import RemoteCommandError
from edgefleet.kernel.errors import ConfigError, EdgefleetError

PYTHON = os.path.realpath(getattr(sys, "_base_executable", sys.executable))  # a base interpreter, not a venv's
PACKAGE, VERSION = "edgefleet_locktest", "1.0"


def _digest(text: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).decode().rstrip("=")


def _wheel(directory: Path, body: str) -> Path:
    """A pure-Python wheel of one module, as pip builds them."""
    path = directory / f"{PACKAGE}-{VERSION}-py3-none-any.whl"
    dist_info = f"{PACKAGE}-{VERSION}.dist-info"
    files = {f"{PACKAGE}.py": body,
             f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {PACKAGE}\nVersion: {VERSION}\n",
             f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{name},sha256={_digest(text)},{len(text.encode())}\n" for name, text in files.items())
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in {**files, f"{dist_info}/RECORD": record + f"{dist_info}/RECORD,,\n"}.items():
            archive.writestr(name, text)
    return path


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("device") / "venv")
    assert ensure_venv(LocalConnection(), PYTHON, path, system_site_packages=False, timeout_s=600) == "created"
    return path


def test_a_python_without_ensurepip_is_refused_naming_python3_venv(tmp_path):
    hidden = tmp_path / "no-ensurepip"
    hidden.mkdir()
    (hidden / "ensurepip.py").write_text("raise ModuleNotFoundError(\"No module named 'ensurepip'\")\n")
    target = tmp_path / "venv"

    with pytest.raises(ConfigError) as refused:
        ensure_venv(LocalConnection(env={"PYTHONPATH": str(hidden)}), PYTHON, str(target),
                    system_site_packages=False, timeout_s=600)

    assert "cannot create a virtualenv" in refused.value.message and "python3-venv" in refused.value.fix
    assert not target.exists()  # nothing half-made


def test_a_venv_left_without_pip_is_rebuilt_and_a_healthy_one_kept(tmp_path):
    connection = LocalConnection()
    target = tmp_path / "venv"
    connection.run(f"{PYTHON} -m venv --without-pip {target}")  # what a failed `python3 -m venv` leaves behind

    assert ensure_venv(connection, PYTHON, str(target), system_site_packages=False, timeout_s=600) == "rebuilt"
    connection.run(f"{target}/bin/python -c 'import pip'")
    assert ensure_venv(connection, PYTHON, str(target), system_site_packages=False, timeout_s=600) == "kept"


def test_the_lock_installs_offline_only_with_matching_hashes(tmp_path, venv):
    connection = LocalConnection()
    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir()
    wheel = _wheel(wheelhouse, "ANSWER = 42\n")
    lock = tmp_path / "lock.txt"
    lock.write_text(f"{PACKAGE}=={VERSION} \\\n    --hash=sha256:{hashlib.sha256(wheel.read_bytes()).hexdigest()}\n")
    good = wheel.read_bytes()
    _wheel(wheelhouse, "ANSWER = 'tampered'\n")  # the wheelhouse's copy differs from what was locked

    with pytest.raises(RemoteCommandError) as refused:
        connection.run(lock_install_command(venv, str(lock), str(wheelhouse)))
    assert "DO NOT MATCH THE HASHES" in refused.value.stderr
    unhashed = tmp_path / "unhashed.txt"
    unhashed.write_text(f"{PACKAGE}=={VERSION}\n")
    with pytest.raises(RemoteCommandError) as unpinned:
        connection.run(lock_install_command(venv, str(unhashed), str(wheelhouse)))
    assert "Hashes are required in --require-hashes mode" in unpinned.value.stderr

    wheel.write_bytes(good)
    connection.run(lock_install_command(venv, str(lock), str(wheelhouse)))
    answer = connection.run(f"{venv}/bin/python -c 'import {PACKAGE}; print({PACKAGE}.ANSWER)'").stdout
    assert answer.strip() == "42"


def test_the_paired_libedgetpu_deb_is_picked_by_cpu_and_version():
    pair = load_pins().for_python("3.11")
    names = [f"libedgetpu1-std_{pair.libedgetpu_version}.bookworm_arm64.deb",
             f"libedgetpu1-std_{pair.libedgetpu_version}.bookworm_amd64.deb",
             "libedgetpu1-std_16.0_arm64.deb", f"libedgetpu1-max_{pair.libedgetpu_version}.bookworm_arm64.deb"]

    assert pick_deb(pair, "aarch64", names) == names[0]
    assert pick_deb(pair, "x86_64", names) == names[1]
    assert pick_deb(pair, "armv7l", names) is None


def test_a_distribution_suffix_with_digits_is_accepted_and_the_host_s_own_build_preferred():
    """Review of issue 22: `.ubuntu24.04_amd64.deb` (a suffix with digits and dots) was never picked, and with
    builds for several distributions the first by name won, whatever the host ran."""
    pair = load_pins().for_python("3.11")
    ubuntu = f"libedgetpu1-std_{pair.libedgetpu_version}.ubuntu24.04_amd64.deb"
    bookworm = f"libedgetpu1-std_{pair.libedgetpu_version}.bookworm_amd64.deb"

    assert pick_deb(pair, "x86_64", [ubuntu]) == ubuntu
    assert pick_deb(pair, "x86_64", [bookworm, ubuntu], ("ubuntu24.04", "noble")) == ubuntu
    assert pick_deb(pair, "x86_64", [bookworm, ubuntu], ("debian12", "bookworm")) == bookworm
    # Several builds, none for this host's distribution: which one works is unknown, so none is guessed.
    assert pick_deb(pair, "x86_64", [bookworm, ubuntu], ("debian11", "bullseye")) is None
    # Another version that only starts like the pinned one is not it.
    assert pick_deb(pair, "x86_64", [f"libedgetpu1-std_{pair.libedgetpu_version}.1_amd64.deb"]) is None


def test_the_host_distribution_is_read_from_os_release(tmp_path):
    os_release = tmp_path / "os-release"
    os_release.write_text('NAME="Ubuntu"\nID=ubuntu\nVERSION_ID="24.04"\nVERSION_CODENAME=noble\n')
    connection = LocalConnection()

    assert host_distributions(connection, str(os_release)) == ("ubuntu24.04", "noble")
    assert host_distributions(connection, str(tmp_path / "missing")) == ()


def _fake_dpkg_query(directory: Path, installed: str) -> str:
    """dpkg-query as on a device with `installed` ("package version") installed."""
    script = directory / "dpkg-query"
    script.write_text(f"#!/bin/sh\nprintf '%s installed\\n' '{installed}'\n")
    script.chmod(0o755)
    return str(directory)


def test_coral_s_libedgetpu_installed_is_reported_and_a_missing_deb_refused(tmp_path):
    connection = LocalConnection(path=_fake_dpkg_query(tmp_path, "libedgetpu1-std 16.0"))

    note = ensure_libedgetpu(connection, "3.11", "aarch64", None, str(tmp_path))
    assert "libedgetpu1-std 16.0 crashes with ai-edge-litert" in note and "16.0tf2.19.1-1" in note

    debs = tmp_path / "debs"
    debs.mkdir()
    (debs / "libedgetpu1-std_16.0tf2.19.1-1.bookworm_amd64.deb").write_bytes(b"")
    with pytest.raises(EdgefleetError, match="no libedgetpu1-std 16.0tf2.19.1-1 .deb for aarch64"):
        ensure_libedgetpu(connection, "3.11", "aarch64", debs, str(tmp_path))


def test_the_paired_build_installed_needs_nothing_and_an_unpaired_python_says_so(tmp_path):
    pair = load_pins().for_python("3.11")
    connection = LocalConnection(path=_fake_dpkg_query(tmp_path, f"libedgetpu1-std {pair.libedgetpu_version}"))

    assert ensure_libedgetpu(connection, "3.11", "aarch64", None, str(tmp_path)) == ""
    assert "no libedgetpu is paired with Python 3.13" in ensure_libedgetpu(connection, "3.13", "aarch64", None,
                                                                           str(tmp_path))
