"""status.json and shadow.json on a runtime directory (issue 24, item 3): where the agent writes them
(`runtime_dir`, default systemd's $RUNTIME_DIRECTORY, else the root), and how every reader finds them through
`<root>/status.json`, never an old file an earlier agent left there."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

from edgefleet.device.agent.config import load_config
from edgefleet.device.agent.loop import Agent
from edgefleet.device.agent.runtime_files import (
    RUNTIME_DIRECTORY_ENV,
    SHADOW_REPORT_FILE,
    link_runtime_files,
    reader_path,
    systemd_runtime_dir,
)
from edgefleet.kernel.contracts.layout import STATUS_FILE
from edgefleet.kernel.contracts.status import AgentStatus, read_status, write_status
from edgefleet.kernel.errors import EdgefleetError
from tests.device.agent.test_loop import running, wait_until


def _config(tmp_path: Path, extra: str = ""):  # noqa: ANN202
    path = tmp_path / "agent.yaml"
    path.write_text(f"device_id: cam-1\nmodel: birds\nroot: {tmp_path / 'root'}\n{extra}")
    return load_config(path)


def _status(pid: int, state: str = "running") -> AgentStatus:
    now = datetime.now(timezone.utc)
    return AgentStatus(device_id="cam-1", pid=pid, state=state, started_at=now, updated_at=now)


def test_under_systemd_the_files_go_to_its_runtime_directory_and_readers_still_read_the_root(tmp_path, monkeypatch):
    monkeypatch.setenv(RUNTIME_DIRECTORY_ENV, "/run/edgefleet-agent:/run/other")  # several: the first

    config = _config(tmp_path)

    assert config.runtime_path == Path("/run/edgefleet-agent")
    assert config.status_written_path == Path("/run/edgefleet-agent/status.json")
    assert config.shadow_report_path == Path("/run/edgefleet-agent/shadow.json")
    assert config.status_path == tmp_path / "root" / "status.json"  # readers: the root's entry
    assert config.spool_path.parent == tmp_path / "root"  # the spool survives a reboot: never on the tmpfs


def test_without_systemd_everything_stays_in_the_root(tmp_path, monkeypatch):
    monkeypatch.delenv(RUNTIME_DIRECTORY_ENV, raising=False)

    config = _config(tmp_path)

    assert config.runtime_dir is None and config.runtime_path == tmp_path / "root"
    assert config.status_written_path == config.status_path == tmp_path / "root" / "status.json"


def test_a_configured_runtime_dir_wins_over_systemds_and_the_environment_over_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv(RUNTIME_DIRECTORY_ENV, "/run/edgefleet-agent")
    assert _config(tmp_path, "runtime_dir: ~/run\n").runtime_path == Path("~/run").expanduser()

    monkeypatch.setenv("EDGEFLEET_RUNTIME_DIR", str(tmp_path / "elsewhere"))
    assert _config(tmp_path, "runtime_dir: ~/run\n").runtime_path == tmp_path / "elsewhere"


@pytest.mark.parametrize("value", ["", " ", ":/run/second"])
def test_an_empty_runtime_directory_variable_is_none(value):
    assert systemd_runtime_dir({RUNTIME_DIRECTORY_ENV: value}) is None
    assert systemd_runtime_dir({}) is None


def test_a_stale_status_left_in_the_root_is_never_read_as_the_live_one(tmp_path):
    root, runtime = tmp_path / "root", tmp_path / "run"
    root.mkdir()
    write_status(root / STATUS_FILE, _status(pid=4242))  # an older agent's, fresh-looking: `running`, just now
    (root / SHADOW_REPORT_FILE).write_text('{"candidate": "old"}')

    link_runtime_files(root, runtime)

    with pytest.raises(EdgefleetError, match="no agent status"):  # before the new agent's first status: none
        read_status(reader_path(root, STATUS_FILE))
    assert not reader_path(root, SHADOW_REPORT_FILE).is_file()  # the shadow command reads it as no report
    write_status(runtime / STATUS_FILE, _status(pid=os.getpid(), state="starting"))
    assert read_status(reader_path(root, STATUS_FILE)).pid == os.getpid()
    assert {entry.name for entry in root.iterdir() if not entry.is_symlink()} == set()  # no stale copy anywhere


def test_after_a_reboot_the_link_leads_nowhere_and_the_reader_is_told_why(tmp_path):
    root, runtime = tmp_path / "root", tmp_path / "run"
    root.mkdir()
    link_runtime_files(root, runtime)
    write_status(runtime / STATUS_FILE, _status(pid=1))
    for entry in runtime.iterdir():  # /run is a tmpfs: emptied at reboot
        entry.unlink()
    runtime.rmdir()

    with pytest.raises(EdgefleetError) as missing:
        read_status(reader_path(root, STATUS_FILE))

    assert str(runtime / STATUS_FILE) in missing.value.message and "reboot" in missing.value.message


def test_back_in_the_root_the_link_of_an_earlier_systemd_run_is_removed(tmp_path):
    root, runtime = tmp_path / "root", tmp_path / "run"
    root.mkdir()
    link_runtime_files(root, runtime)
    write_status(runtime / STATUS_FILE, _status(pid=4242))  # the last status under systemd

    link_runtime_files(root, root)  # the agent now runs without a runtime directory

    assert not (root / STATUS_FILE).exists() and not (root / STATUS_FILE).is_symlink()
    write_status(root / STATUS_FILE, _status(pid=os.getpid()))
    assert not (root / STATUS_FILE).is_symlink() and read_status(root / STATUS_FILE).pid == os.getpid()


def test_a_directory_where_the_link_goes_is_an_error_naming_it_and_the_fix(tmp_path):
    root = tmp_path / "root"
    (root / STATUS_FILE).mkdir(parents=True)

    with pytest.raises(EdgefleetError) as refused:
        link_runtime_files(root, tmp_path / "run")

    assert str(root / STATUS_FILE) in refused.value.message and "remove" in refused.value.fix


def test_the_agent_writes_its_status_in_the_runtime_dir_and_replaces_a_stale_root_status(releases, tmp_path):
    releases.install("1.0.0")
    write_status(releases.root / STATUS_FILE, _status(pid=4242))  # left by the agent before the upgrade
    runtime = tmp_path / "run"
    config = load_config(releases.agent_config(f"runtime_dir: {runtime}\nstatus:\n  interval_s: 0.2\n"))
    def live() -> bool:
        return config.status_path.exists() and read_status(config.status_path).frames > 0

    with running(Agent(config)):
        wait_until(live, "a live status read through the root")

    assert (releases.root / STATUS_FILE).is_symlink()
    assert (releases.root / STATUS_FILE).resolve() == (runtime / STATUS_FILE).resolve()
    final = read_status(config.status_path)
    assert final.pid == os.getpid() and final.state == "stopped" and final.frames > 0
