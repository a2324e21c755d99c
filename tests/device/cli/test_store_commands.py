"""`edgefleet-agent verify | install | activate | rollback | models | pull` through typer's CliRunner."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgefleet.device.cli import app
from edgefleet.device.cli.store_commands import PullSettings, pull_settings, pull_summary
from edgefleet.device.pull import PullResult
from edgefleet.device.store import ModelStore
from edgefleet.flows.registry import LocalRegistryWriter
from tests.device.store_fixtures import Keys, VersionFactory


def _cli_runner() -> CliRunner:
    """stdout and stderr kept apart: always with Click 8.2+, on request with Click 8.1 (Python 3.9's)."""
    try:
        return CliRunner(mix_stderr=False)
    except TypeError:  # Click 8.2 removed the parameter
        return CliRunner()


runner = _cli_runner()


def invoke(*args: str | Path) -> object:
    return runner.invoke(app, [str(arg) for arg in args])


@pytest.fixture(autouse=True)
def _no_home_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands without --root use $EDGEFLEET_AGENT_ROOT: keep it inside the test."""
    monkeypatch.setenv("EDGEFLEET_AGENT_ROOT", str(tmp_path / "env-root"))


def test_verify_ok_and_json(make_version: VersionFactory, keys: Keys) -> None:
    directory = make_version("birds", "1.0.0")
    result = invoke("verify", directory, "--public-key", keys.public_file)
    assert result.exit_code == 0, result.output
    assert "OK birds 1.0.0" in result.stdout

    result = invoke("verify", directory, "--public-key", keys.public_file, "--json")
    payload = json.loads(result.stdout)
    assert payload["verified"] is True
    assert payload["version"] == "1.0.0"
    assert "model_cpu.tflite" in payload["files"]


def test_verify_a_tampered_file_exits_2_naming_it(make_version: VersionFactory, keys: Keys) -> None:
    directory = make_version("birds", "1.0.0")
    (directory / "model_edgetpu.tflite").write_bytes(
        b"x" + (directory / "model_edgetpu.tflite").read_bytes()[1:]
    )
    result = invoke("verify", directory, "--public-key", keys.public_file)
    assert result.exit_code == 2
    assert "model_edgetpu.tflite" in result.stderr
    assert "fix:" in result.stderr
    assert result.stdout == ""


def test_verify_uses_the_root_key_by_default(
    make_version: VersionFactory, store: ModelStore, other_keys: Keys
) -> None:
    directory = make_version("birds", "1.0.0", private_key=other_keys.private)
    result = invoke("verify", directory, "--root", store.root)
    assert result.exit_code == 2
    assert str(store.root / "keys" / "release.pub") in result.stderr


def test_install_activate_rollback_and_models(make_version: VersionFactory, store: ModelStore) -> None:
    assert (
        invoke("install", make_version("birds", "1.0.0"), "--root", store.root, "--activate").exit_code == 0
    )
    result = invoke("install", make_version("birds", "2.0.0"), "--root", store.root)
    assert result.exit_code == 0, result.output
    assert "installed birds 2.0.0" in result.stdout

    result = invoke("activate", "birds", "2.0.0", "--root", store.root, "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert (payload["current"]["version"], payload["previous"]["version"]) == ("2.0.0", "1.0.0")

    result = invoke("models", "--root", store.root, "--json")
    models = json.loads(result.stdout)["models"]
    assert models == [
        {
            "model": "birds",
            "versions": ["1.0.0", "2.0.0"],
            "current": "2.0.0",
            "previous": "1.0.0",
            "floor": "2.0.0",
            "refused": [],
        }
    ]

    result = invoke("rollback", "birds", "--root", store.root)
    assert result.exit_code == 0, result.output
    assert "rolled back to 1.0.0" in result.stdout
    assert store.current("birds").version == "1.0.0"
    after = json.loads(invoke("models", "--root", store.root, "--json").stdout)["models"][0]
    assert (after["current"], after["floor"]) == ("1.0.0", "2.0.0")  # a rollback by hand keeps the floor

    table = invoke("models", "--root", store.root)
    assert "birds" in table.stdout and "1.0.0" in table.stdout


def test_rollback_without_previous_and_unknown_version_exit_2(
    make_version: VersionFactory, store: ModelStore
) -> None:
    invoke("install", make_version("birds", "1.0.0"), "--root", store.root, "--activate")
    result = invoke("rollback", "birds", "--root", store.root)
    assert result.exit_code == 2
    assert "no previous version" in result.stderr
    result = invoke("activate", "birds", "3.0.0", "--root", store.root)
    assert result.exit_code == 2
    assert "3.0.0 of model birds is not installed" in result.stderr


def test_root_and_key_default_to_the_environment(
    make_version: VersionFactory, keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "from-env"
    (root / "keys").mkdir(parents=True)
    (root / "keys" / "release.pub").write_bytes(keys.public_file.read_bytes())
    monkeypatch.setenv("EDGEFLEET_AGENT_ROOT", str(root))
    result = invoke("install", make_version("birds", "1.0.0"), "--activate")
    assert result.exit_code == 0, result.output
    assert os.readlink(root / "models" / "birds" / "current") == "1.0.0"


def pull_args(registry: LocalRegistryWriter, store: ModelStore) -> tuple:
    """`edgefleet-agent pull` of birds' stable channel from a registry directory into `store`."""
    return ("pull", "--registry", registry.root, "--model", "birds", "--channel", "stable", "--root", store.root)


def test_pull_from_a_registry_directory(
    make_version: VersionFactory, store: ModelStore, local_registry: LocalRegistryWriter, keys: Keys
) -> None:
    local_registry.publish_version("birds", "1.0.0", make_version("birds", "1.0.0"))
    local_registry.promote("birds", "1.0.0", "stable", signing_key=keys.private)
    args = pull_args(local_registry, store)

    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["outcome"] == "activated"
    assert store.current("birds").version == "1.0.0"

    result = invoke(*args)
    assert result.exit_code == 0
    assert "already current" in result.stdout


def test_pull_of_a_tampered_version_exits_2(
    make_version: VersionFactory, store: ModelStore, local_registry: LocalRegistryWriter, keys: Keys
) -> None:
    local_registry.publish_version("birds", "1.0.0", make_version("birds", "1.0.0"))
    local_registry.promote("birds", "1.0.0", "stable", signing_key=keys.private)
    (local_registry.root / "models/birds/1.0.0/labels.txt").write_text("evil\n")
    args = pull_args(local_registry, store)
    result = invoke(*args)
    assert result.exit_code == 2
    assert "was refused" in result.stderr and "labels.txt" in result.stderr
    assert store.current("birds") is None
    again = invoke(*args)
    assert again.exit_code == 2
    assert "--retry-refused" in again.stderr


def test_pull_from_a_missing_registry_directory_exits_2(store: ModelStore, tmp_path: Path) -> None:
    result = invoke(
        "pull",
        "--registry",
        tmp_path / "nope",
        "--model",
        "birds",
        "--channel",
        "stable",
        "--root",
        store.root,
    )
    assert result.exit_code == 2
    assert "nope does not exist" in result.stderr


def test_config_gives_the_root_and_the_release_key_from_outside_the_root(
        make_version: VersionFactory, keys: Keys, tmp_path: Path) -> None:
    """What the rollout passes to agents deploy-agent installed: `--config <config_dir>/<id>/agent.yaml`, whose
    root holds the store and whose release key lives in the (root-owned) config directory, not in the root."""
    root, config_dir = tmp_path / "agent-root", tmp_path / "etc" / "cam-1"
    (config_dir / "keys").mkdir(parents=True)
    release_key = config_dir / "keys" / "release.pub"
    release_key.write_bytes(Path(keys.public_file).read_bytes())
    config = config_dir / "agent.yaml"
    config.write_text(f"device_id: cam-1\nmodel: birds\nroot: {root}\npublic_key: {release_key}\n")
    directory = make_version("birds", "1.0.0")

    verified = json.loads(invoke("verify", directory, "--config", config, "--json").stdout)
    assert verified["public_key"] == str(release_key)
    result = invoke("install", directory, "--activate", "--config", config, "--json")
    assert result.exit_code == 0, result.output
    assert ModelStore(root, public_key=release_key).pointer("birds", "current") == "1.0.0"
    assert not (root / "keys" / "release.pub").exists()
    listed = json.loads(invoke("models", "--config", config, "--json").stdout)
    assert "1.0.0" in json.dumps(listed)


def test_pull_settings_come_from_the_agent_config_and_the_device_id_option(tmp_path: Path) -> None:
    assert pull_settings(None, "cam-9") == PullSettings(device_id="cam-9")
    config = tmp_path / "agent.yaml"
    config.write_text(f"device_id: cam-1\nmodel: birds\nroot: {tmp_path / 'root'}\n")
    assert pull_settings(config, None).device_id == "cam-1"
    assert pull_settings(config, "cam-2") == PullSettings(device_id="cam-2")  # --device-id wins; no window


def test_pull_json_is_the_rounds_outcome() -> None:
    result = PullResult(changed=True, version="1.1.0", reason="activated 1.1.0", outcome="activated",
                        previous="1.0.0")
    assert pull_summary(result) == {"changed": True, "version": "1.1.0", "outcome": "activated",
                                    "reason": "activated 1.1.0", "previous": "1.0.0"}
