"""Finding 2, compile host not verified: `flows/release/compiler.py` connected with Fabric's default policy
(unknown host keys accepted), and what that host returned got signed. The compile host is now reached with
the rollout's SSH connection (`DeviceConnection`: known_hosts, RejectPolicy): a host with an unknown or
changed key is refused, and the release signs and publishes nothing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from edgefleet.flows.release.compiler import CompileError, compile_model, compiler_host


def other_host_key(tmp_path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "impostor")], check=True)
    key_type, key_text = (tmp_path / "impostor.pub").read_text().split()[:2]
    return f"{key_type} {key_text}"


def test_a_compile_host_with_an_unknown_key_is_refused(ssh_compile_host, standin_compiler, tiny_int8, tmp_path):
    params = ssh_compile_host(standin_compiler)
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(CompileError, match="not in .*refused"):
        compile_model(compiler_host(params.model_copy(update={"known_hosts": str(empty)})), tiny_int8, "m.tflite")


def test_a_compile_host_whose_key_changed_is_refused(ssh_compile_host, standin_compiler, tiny_int8, tmp_path):
    params = ssh_compile_host(standin_compiler)
    changed = tmp_path / "changed_known_hosts"
    changed.write_text(f"[127.0.0.1]:{params.port} {other_host_key(tmp_path)}\n")
    with pytest.raises(CompileError, match="differs"):
        compile_model(compiler_host(params.model_copy(update={"known_hosts": str(changed)})), tiny_int8, "m.tflite")


@pytest.mark.usefixtures("prefect_api")
def test_a_release_through_an_impostor_compile_host_signs_nothing(
    ssh_compile_host, standin_compiler, make_params, tmp_path
) -> None:
    from edgefleet.device.registry import open_registry_reader
    from edgefleet.flows.release.flow import release_model

    compile_params = ssh_compile_host(standin_compiler)
    changed = tmp_path / "changed_known_hosts"
    changed.write_text(f"[127.0.0.1]:{compile_params.port} {other_host_key(tmp_path)}\n")
    params = make_params(model="impostor", compile={**compile_params.model_dump(), "known_hosts": str(changed)})
    with pytest.raises(CompileError):
        release_model(params)
    assert open_registry_reader(params.registry).list_versions("impostor") == []
    assert not list(Path(params.work_dir).rglob("impostor/**/manifest.sig"))
