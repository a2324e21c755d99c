"""`edgefleet ui`'s stack on bad input: a clear error naming the thing and the fix, and nothing left running.

The fast tests need no server; the deploy-failure test starts a real Prefect server and checks it is stopped
again when a deployment of prefect.yaml cannot be registered.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgefleet.cli.ui import ui
from edgefleet.kernel.console import ERROR_EXIT_CODE
from edgefleet.kernel.errors import ConfigError
from edgefleet.local.ui import LocalPrefectUi, UiError, UiSettings, prefect_env, read_work_pools

REPO = Path(__file__).resolve().parents[2]


def _project(tmp_path: Path, prefect_yaml: str) -> Path:
    (tmp_path / "prefect.yaml").write_text(prefect_yaml)
    return tmp_path


def test_work_pools_come_from_prefect_yaml() -> None:
    import yaml

    document = yaml.safe_load((REPO / "prefect.yaml").read_text())
    expected = {deployment["work_pool"]["name"] for deployment in document["deployments"]}
    assert set(read_work_pools(REPO / "prefect.yaml")) == expected


@pytest.mark.parametrize(
    ("content", "named"),
    [
        (None, "does not exist"),
        ("deployments: [unclosed\n", "not valid YAML"),
        ("name: x\n", "lists no deployments"),
        ("deployments: []\n", "lists no deployments"),
        ("deployments:\n  - name: lonely\n    entrypoint: f.py:f\n", "deployment lonely"),
    ],
)
def test_bad_prefect_yaml_is_named(tmp_path: Path, content: str | None, named: str) -> None:
    path = tmp_path / "prefect.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        read_work_pools(path)
    assert named in caught.value.message and str(path) in caught.value.message
    assert caught.value.fix


def test_a_deployment_without_a_pool_is_told_the_pools_there_are(tmp_path: Path) -> None:
    """Review of issue 22: the hint still named `edgefleet-process`, the one pool deployments no longer use."""
    from edgefleet.infra.pools import POOL_IDENTITY

    path = tmp_path / "prefect.yaml"
    path.write_text("deployments:\n  - name: lonely\n    entrypoint: f.py:f\n")
    with pytest.raises(ConfigError) as caught:
        read_work_pools(path)
    assert "edgefleet-process" not in caught.value.fix
    assert all(f"`work_pool: {{name: {pool}}}`" in caught.value.fix for pool in POOL_IDENTITY), caught.value.fix
    assert "edgefleet.infra.pools" in caught.value.fix


def test_port_in_use_fails_before_starting_anything(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        stack = LocalPrefectUi(UiSettings(project_dir=REPO, prefect_home=tmp_path / "home", port=port))
        with pytest.raises(UiError) as caught:
            stack.start()
    assert f"port {port}" in caught.value.message and "--port 0" in caught.value.fix
    assert stack.server is None and not stack.workers
    assert not (tmp_path / "home").exists()


def test_environment_points_only_at_the_local_server(tmp_path: Path) -> None:
    settings = UiSettings(project_dir=tmp_path, port=0)
    base = {"PREFECT_API_KEY": "secret", "PREFECT_PROFILE": "cloud", "PREFECT_API_URL": "https://cloud", "PATH": "/bin"}
    env = prefect_env(settings, "http://127.0.0.1:1234/api", "http://127.0.0.1:1234", base)
    assert env["PREFECT_API_URL"] == "http://127.0.0.1:1234/api"
    assert env["PREFECT_HOME"] == str((tmp_path / ".edgefleet" / "prefect").resolve())
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false" and env["DO_NOT_TRACK"] == "1"
    assert "PREFECT_API_KEY" not in env and "PREFECT_PROFILE" not in env and env["PATH"] == "/bin"


def test_cli_refuses_two_prefect_homes(tmp_path: Path) -> None:
    import typer

    app = typer.Typer()
    app.command()(ui)
    result = CliRunner().invoke(app, ["--user-home", "--prefect-home", str(tmp_path), "--project-dir", str(REPO)])
    assert result.exit_code == ERROR_EXIT_CODE
    assert "--user-home" in result.output and "--prefect-home" in result.output


def test_cli_names_a_missing_prefect_yaml(tmp_path: Path) -> None:
    import typer

    app = typer.Typer()
    app.command()(ui)
    result = CliRunner().invoke(app, ["--project-dir", str(tmp_path), "--port", "0"])
    assert result.exit_code == ERROR_EXIT_CODE
    assert str(tmp_path / "prefect.yaml") in result.output and "--project-dir" in result.output


@pytest.mark.slow
def test_failed_deploy_names_it_and_stops_the_server(
    tmp_path: Path, prefect_processes: Callable[[Path], list[int]]
) -> None:
    (tmp_path / "project").mkdir()
    project = _project(
        tmp_path / "project",
        "name: broken\npull:\n  - prefect.deployments.steps.set_working_directory:\n"
        "      directory: '{{ $PWD }}'\n"
        "deployments:\n  - name: ghost\n    entrypoint: flows/missing.py:nowhere\n"
        "    work_pool: {name: edgefleet-process}\n",
    )
    home = tmp_path / "home"
    stack = LocalPrefectUi(UiSettings(project_dir=project, prefect_home=home, port=0))
    with pytest.raises(UiError) as caught:
        stack.start()
    assert "prefect deploy --all" in caught.value.message and "missing.py" in caught.value.message
    assert str(project / "prefect.yaml") in caught.value.fix
    assert stack.server is None and not stack.workers
    assert prefect_processes(home.resolve()) == []
