"""Finding 2, compile host not verified: `flows/release/compiler.py` connected with Fabric's default policy
(unknown host keys accepted), and what that host returned got signed. The compile host is now reached with
the fleet's one SSH connection (`HostConnection` of a `CompileHostSpec`: known_hosts, RejectPolicy): a host
with an unknown or changed key is refused, and the release signs and publishes nothing."""

from __future__ import annotations

import re
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from edgefleet.flows.fleet.connection import HostKeyError
from edgefleet.flows.release.compiler import CompileError, compile_model, compiler_host
from edgefleet.flows.release.params import load_params

REPO = Path(__file__).resolve().parents[2]


def other_host_key(tmp_path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "impostor")], check=True)
    key_type, key_text = (tmp_path / "impostor.pub").read_text().split()[:2]
    return f"{key_type} {key_text}"


def spying_compiler(compiler: Path, ran: Path) -> Path:
    """The stand-in compiler, touching `ran` first: proof that a host ran it."""
    spying = ran.with_name("spying_compiler")
    spying.write_text(f'#!/bin/sh\ntouch "{ran}"\nexec "{compiler}" "$@"\n')
    spying.chmod(spying.stat().st_mode | stat.S_IXUSR)
    return spying


def test_compile_host_spoofing_is_refused(ssh_compile_host, standin_compiler, tiny_int8, tmp_path):
    """An impostor answers on the compile host's address with its own host key. The release config (read from
    YAML, as `edgefleet release --config` does) names the real host's known_hosts: the connection is refused
    before anything is uploaded or run, so nothing the impostor would return can be signed."""
    ran = tmp_path / "impostor-compiled"
    impostor = ssh_compile_host(spying_compiler(standin_compiler, ran))
    known_hosts = tmp_path / "real_known_hosts"  # the real compile host's key, checked out of band
    known_hosts.write_text(f"[127.0.0.1]:{impostor.port} {other_host_key(tmp_path)}\n")
    config = tmp_path / "release.yaml"
    config.write_text(yaml.safe_dump({"model": "spoofed", "compile": {
        **impostor.model_dump(), "known_hosts": str(known_hosts)}}))
    params = load_params(config)
    with pytest.raises(CompileError, match="differs from .*refused") as caught:
        compile_model(compiler_host(params.compile), tiny_int8, "m.tflite", require=True)
    assert isinstance(caught.value.__cause__, HostKeyError)
    assert not ran.exists()  # the impostor's compiler never ran
    # The trusted host, same address and config but its real key: the same path compiles (the refusal above
    # is the key, not the setup).
    trusted = load_params(config).compile.model_copy(update={"known_hosts": impostor.known_hosts})
    assert compile_model(compiler_host(trusted), tiny_int8, "m.tflite").edgetpu_tflite == tiny_int8
    assert ran.exists()


def test_ssh_connections_are_opened_in_one_place() -> None:
    """Only `edgefleet.flows.fleet.connection.open_verified_connection` builds a Fabric/paramiko connection, so no
    code path (rollout, deploy-agent, compile host) can fall back to Fabric's default AutoAddPolicy."""
    opening = re.compile(r"\b(Connection|SSHClient)\(|set_missing_host_key_policy|AutoAddPolicy|WarningPolicy"
                         r"|^\s*(from|import)\s+fabric\b|\bparamiko\.(client|SSHClient)\b"
                         r"|from paramiko import .*SSHClient",
                         re.M)
    found = {str(path.relative_to(REPO)) for folder in ("device/src", "flows/src", "infra/src", "src")
             for path in (REPO / folder).rglob("*.py") if opening.search(path.read_text())}
    assert found == {"flows/src/edgefleet/flows/fleet/connection.py"}


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

    compile_params = ssh_compile_host(spying_compiler(standin_compiler, ran := tmp_path / "impostor-compiled"))
    changed = tmp_path / "changed_known_hosts"
    changed.write_text(f"[127.0.0.1]:{compile_params.port} {other_host_key(tmp_path)}\n")
    params = make_params(model="impostor", compile={**compile_params.model_dump(), "known_hosts": str(changed)})
    with pytest.raises(CompileError, match="differs") as caught:
        release_model(params)
    assert isinstance(caught.value.__cause__, HostKeyError)  # refused for the key, not for another reason
    assert not ran.exists()  # nothing was uploaded to or run on the impostor
    assert open_registry_reader(params.registry).list_versions("impostor") == []
