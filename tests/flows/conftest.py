"""Fixtures of the pipeline tests: a real Prefect API (prefect_test_harness), the edgetpu_compiler stand-in,
release parameters pointing everything (work dir, registry, keys) into temporary directories.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gcs_buckets import temporary_bucket

from edgefleet.kernel.trust.signatures import generate_keypair, save_private_key, save_public_key

STANDIN_COMPILER = Path(__file__).parent / "release" / "standin_edgetpu_compiler.py"

# Tiny but real: 32x32 demo images, 2 epochs: enough for a small CNN to separate the coloured shapes.
TINY_TRAINING = {"input_size": 32, "epochs": 2, "small_cnn_filters": (8, 16), "batch_size": 16}
TINY_DATASET = {"demo_samples_per_class": 24, "demo_image_size": 32}


@pytest.fixture(scope="session")
def standin_compiler(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An executable `edgetpu_compiler` that is the stand-in (see standin_edgetpu_compiler.py's docstring)."""
    bin_dir = tmp_path_factory.mktemp("compiler-bin")
    executable = bin_dir / "edgetpu_compiler"
    executable.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STANDIN_COMPILER}" "$@"\n')
    executable.chmod(executable.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return executable


@pytest.fixture(scope="session")
def signing_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(private key file, public key file) of a release key made for the session."""
    directory = tmp_path_factory.mktemp("keys")
    private_key, public_key = generate_keypair()
    private_path = save_private_key(private_key, directory / "release.key")
    public_path = save_public_key(public_key, directory / "release.key.pub")
    return private_path, public_path


@pytest.fixture(scope="session")
def shared_work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A work directory shared by tests that may reuse each other's cached training (same data, params)."""
    return tmp_path_factory.mktemp("release-work")


@pytest.fixture
def make_params(
    tmp_path: Path, signing_keys: tuple[Path, Path], standin_compiler: Path, shared_work_dir: Path
) -> Callable[..., Any]:
    """Builds tiny ReleaseParams into temporary dirs; keyword arguments override (nested dicts merge)."""
    from edgefleet.flows.release.params import ReleaseParams

    def make(**overrides: Any) -> ReleaseParams:
        registry = tmp_path / "registry"
        registry.mkdir(exist_ok=True)
        document: dict[str, Any] = {
            "model": "shapes",
            "dataset": dict(TINY_DATASET),
            "training": dict(TINY_TRAINING),
            "quantization": {"representative_samples": 32},
            "compile": {"mode": "local", "compiler": str(standin_compiler)},
            "gates": {"max_accuracy_drop_points": 100.0, "min_tpu_fraction": 0.9},
            "registry": str(registry),
            "version": None,
            "channel": "canary",
            "signing": {"key_file": str(signing_keys[0])},
            "latency_runs": 3,
            "work_dir": str(shared_work_dir),
            "source_commit": "0123456789abcdef",
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(document.get(key), dict):
                document[key] = {**document[key], **value}
            else:
                document[key] = value
        return ReleaseParams.model_validate(document)

    return make


@pytest.fixture(scope="session")
def tiny_converted():
    """A tiny untrained small_cnn converted to float32 and int8 TFLite (real conversion, random weights)."""
    import numpy as np

    from edgefleet.flows.release.params import TrainingParams
    from edgefleet.flows.release.quantize import convert
    from edgefleet.flows.release.train import TrainedModel, build_model, model_to_bytes

    params = TrainingParams(**TINY_TRAINING)
    model = build_model(params, classes=3, batch_size=1)
    calibration = np.random.default_rng(0).uniform(-1, 1, size=(8, 32, 32, 3)).astype(np.float32)
    return convert(TrainedModel(model_to_bytes(model), 32, 3, None, "tiny"), calibration)


@pytest.fixture(scope="session")
def tiny_int8(tiny_converted) -> bytes:
    return tiny_converted.int8_tflite


@pytest.fixture(scope="session")
def tiny_float(tiny_converted) -> bytes:
    return tiny_converted.float_tflite


def _sshd() -> str | None:
    import shutil

    for candidate in (shutil.which("sshd"), "/usr/sbin/sshd"):
        if candidate and Path(candidate).exists():
            return candidate
    return None


@pytest.fixture
def ssh_compile_host(tmp_path: Path) -> Iterator[Callable[[Path], Any]]:
    """A real OpenSSH server on a loopback port, logging in as the current user with a fresh key.

    Returns a function giving the CompileParams (mode ssh) that reach it and run `compiler` there.
    """
    import getpass
    import socket
    import subprocess
    import time

    from edgefleet.local.emulators import free_port

    sshd = _sshd()
    if sshd is None:
        pytest.skip("OpenSSH server (sshd) is not installed here")
    privsep = Path("/run/sshd")  # what the Debian service creates before starting sshd as root
    if os.geteuid() == 0 and not privsep.is_dir():
        privsep.mkdir(mode=0o755, parents=True, exist_ok=True)
    for name in ("host_key", "client_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name)], check=True
        )
    (tmp_path / "authorized_keys").write_text((tmp_path / "client_key.pub").read_text())
    (tmp_path / "authorized_keys").chmod(0o600)
    port = free_port()
    config = tmp_path / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp_path / 'host_key'}\n"
        f"AuthorizedKeysFile {tmp_path / 'authorized_keys'}\nPasswordAuthentication no\n"
        f"PidFile {tmp_path / 'sshd.pid'}\nStrictModes no\nUsePAM no\nSubsystem sftp internal-sftp\n"
    )
    process = subprocess.Popen(
        [sshd, "-D", "-e", "-f", str(config)], stderr=open(tmp_path / "sshd.log", "wb")
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    from edgefleet.flows.release.compile_params import CompileSsh

    known_hosts = tmp_path / "known_hosts"  # the compile host's key, as checked out of band
    key_type, key_text = (tmp_path / "host_key.pub").read_text().split()[:2]
    known_hosts.write_text(f"[127.0.0.1]:{port} {key_type} {key_text}\n")

    def params(compiler: Path) -> CompileSsh:
        return CompileSsh(
            host="127.0.0.1",
            port=port,
            user=getpass.getuser(),
            key_file=str(tmp_path / "client_key"),
            known_hosts=str(known_hosts),
            compiler=str(compiler),
            connect_timeout_s=10,
        )

    try:
        yield params
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def gcs_bucket(gcs_env, unique_name: str) -> Iterator[str]:
    """A fresh bucket on the session's GCS emulator, which answers generation preconditions like GCS (412).

    The emulator itself ignores `if_generation_match`; `enforce_generation_preconditions` adds the documented
    GCS behaviour so a compare-and-swap cannot pass falsely here.
    """
    from google.cloud import storage

    from edgefleet.local.gcs_preconditions import enforce_generation_preconditions

    enforce_generation_preconditions(gcs_env)
    with temporary_bucket(storage.Client(), f"edgefleet-release-{unique_name}") as name:
        yield name
