"""`edgefleet fleet status`, `edgefleet fleet device` and `edgefleet monitor` as users run them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from monitor_helpers import telemetry
from typer.testing import CliRunner

from edgefleet.cli import app
from edgefleet.kernel.errors import ConfigError
from edgefleet.kernel.trust.signatures import generate_keypair, save_public_key
from edgefleet.monitor.config import MonitorConfig, load_monitor_config
from edgefleet.monitor.ingest import apply
from edgefleet.monitor.store import commit, open_store

runner = CliRunner()


def text(result) -> str:
    """The command's output with rich's line wrapping undone."""
    return " ".join(result.output.split())


@pytest.fixture
def fleet_db(tmp_path):
    """A fleet state written through `apply`: two healthy devices on two versions, one erroring, one silent."""
    now = datetime.now(UTC)
    path = tmp_path / "fleet.sqlite"
    with open_store(path, latency_window=8, count_bucket_s=60.0) as store:
        for seq in (1, 2, 3):
            apply(store, telemetry("cam-1", seq, at=now - timedelta(seconds=5 - seq), latency_ms=4.0 + seq,
                                   cpu_temp_c=51.0))
        apply(store, telemetry("cam-2", 1, at=now - timedelta(seconds=3), version="1.1.0", variant="cpu",
                               backend="cpu", latency_ms=30.0, fps=12.5))
        apply(store, telemetry("cam-2", 2, at=now - timedelta(seconds=2), event="swap", event_version="1.1.0",
                               detail="1.0.0 -> 1.1.0", version="1.1.0", variant="cpu", backend="cpu"))
        apply(store, telemetry("cam-3", 1, at=now - timedelta(seconds=1), count=10, errors=9))
        apply(store, telemetry("cam-4", 1, at=now - timedelta(hours=2)))
        commit(store)
    return path


def test_fleet_status_json(fleet_db):
    result = runner.invoke(app, ["fleet", "status", "--json", "--db", str(fleet_db)])
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    devices = {device["device_id"]: device for device in status["devices"]}
    assert {d: devices[d]["status"] for d in devices} == {"cam-1": "healthy", "cam-2": "healthy",
                                                          "cam-3": "failing", "cam-4": "stale"}
    assert devices["cam-1"]["latency_p50_ms"] == 6.0 and devices["cam-1"]["latency_p95_ms"] == 7.0
    assert (devices["cam-2"]["model_version"], devices["cam-2"]["backend"], devices["cam-2"]["fps"]) == (
        "1.1.0", "cpu", 12.5)
    assert [device["device_id"] for device in status["silent"]] == ["cam-4"]
    assert {(v["model_version"], v["devices"]) for v in status["versions"]} == {("1.0.0", 3), ("1.1.0", 1)}
    assert status["counters"]["messages"] == 7


def test_fleet_status_thresholds_from_the_command_line(fleet_db):
    result = runner.invoke(app, ["fleet", "status", "--json", "--db", str(fleet_db), "--stale-after", "86400",
                                 "--silent-after", "86400"])
    status = json.loads(result.output)
    assert {d["device_id"]: d["status"] for d in status["devices"]}["cam-4"] == "healthy"
    assert status["silent"] == []


def test_fleet_status_table(fleet_db):
    result = runner.invoke(app, ["fleet", "status", "--db", str(fleet_db)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    row = next(line for line in lines if "cam-1" in line)
    for cell in ("mobilenet:1.0.0", "edgetpu:usb:0", "6.0", "7.0", "30.0", "51.0", "healthy"):
        assert cell in row
    assert "failing" in next(line for line in lines if "cam-3" in line)
    assert "4 devices, 2 healthy, 1 stale, 1 failing" in result.output
    assert "version distribution" in result.output
    silent_section = result.output[result.output.index("silent for more than"):]
    assert "cam-4" in silent_section and "cam-1" not in silent_section


def test_fleet_device_history(fleet_db):
    result = runner.invoke(app, ["fleet", "device", "cam-2", "--json", "--db", str(fleet_db)])
    assert result.exit_code == 0, result.output
    history = json.loads(result.output)
    assert history["status"]["model_version"] == "1.1.0"
    assert [(e["kind"], e["model_version"]) for e in history["events"]] == [("swap", "1.1.0")]
    table = runner.invoke(app, ["fleet", "device", "cam-2", "--db", str(fleet_db)], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "1.0.0 -> 1.1.0" in table.output and "device cam-2" in table.output


def test_unknown_device_missing_store_and_bad_thresholds_are_clear(fleet_db, tmp_path):
    unknown = runner.invoke(app, ["fleet", "device", "cam-99", "--db", str(fleet_db)])
    assert unknown.exit_code == 2
    assert "device 'cam-99' has never reported" in text(unknown) and "fix:" in text(unknown)
    missing = runner.invoke(app, ["fleet", "status", "--db", str(tmp_path / "none.sqlite")])
    assert missing.exit_code == 2 and "no fleet state at" in text(missing)
    assert not (tmp_path / "none.sqlite").exists()  # reading never creates a store
    bad = runner.invoke(app, ["fleet", "status", "--db", str(fleet_db), "--stale-after", "0"])
    assert bad.exit_code == 2 and "--stale-after must be more than 0" in text(bad)


def test_fleet_commands_read_the_store_path_from_the_config(fleet_db, tmp_path):
    config = tmp_path / "edgefleet.yaml"
    config.write_text(yaml.safe_dump({"registry": {"uri": "ignored"},
                                      "monitor": {"store_path": str(fleet_db), "status": {"stale_after_s": 1e6}}}))
    result = runner.invoke(app, ["fleet", "status", "--json", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert {d["status"] for d in json.loads(result.output)["devices"]} == {"healthy", "failing"}


def test_monitor_command_names_a_missing_subscription(pubsub_env, tmp_path):
    config = tmp_path / "monitor.yaml"
    enrolment = save_public_key(generate_keypair()[1], tmp_path / "enrolment.pub")
    (tmp_path / "registry").mkdir()  # a readable key registry (one that is not refuses the start first)
    config.write_text(yaml.safe_dump({"monitor": {"identity": {"registry": str(tmp_path / "registry"),
                                                               "enrolment_keys": [str(enrolment)]}}}))
    result = runner.invoke(app, ["monitor", "--project", pubsub_env.project, "--subscription", "no-such-sub",
                                 "--db", str(tmp_path / "fleet.sqlite"), "--config", str(config)])
    assert result.exit_code == 2
    assert "subscription projects/edgefleet-local/subscriptions/no-such-sub does not exist" in text(result)


def test_monitor_command_without_a_key_registry_names_the_fix(tmp_path):
    """Signatures are checked by default: a monitor config without `identity.registry` is refused before
    anything starts, naming the setting and the explicit transition mode."""
    config = tmp_path / "monitor.yaml"
    config.write_text(yaml.safe_dump({"monitor": {"store_path": str(tmp_path / "fleet.sqlite")}}))
    result = runner.invoke(app, ["monitor", "--config", str(config)])
    assert result.exit_code == 2
    assert "no identity.registry" in text(result) and "identity.mode: transition" in text(result)
    assert not (tmp_path / "fleet.sqlite").exists()


def test_monitor_command_refuses_a_wrong_config(tmp_path):
    config = tmp_path / "monitor.yaml"
    config.write_text("monitor:\n  subscripton: typo\n  latency_window: 0\n")
    result = runner.invoke(app, ["monitor", "--config", str(config)])
    assert result.exit_code == 2
    assert "unknown key 'subscripton'" in text(result) and "latency_window" in text(result)


def test_load_monitor_config(tmp_path):
    config = tmp_path / "monitor.yaml"
    config.write_text(yaml.safe_dump({"project": "p1", "store_path": "~/fleet.sqlite",
                                      "cloud_metrics": {"enabled": True, "period_s": 120}}))
    loaded = load_monitor_config(config, subscription="s1", project=None)
    assert (loaded.project, loaded.subscription) == ("p1", "s1")
    assert not str(loaded.store_path).startswith("~")
    assert loaded.cloud_metrics.period_s == 120
    assert load_monitor_config(None) == MonitorConfig()
    with pytest.raises(ConfigError, match="does not exist"):
        load_monitor_config(tmp_path / "missing.yaml")
    config.write_text("cloud_metrics:\n  period_s: 1\n  max_series_per_request: 500\n")
    with pytest.raises(ConfigError, match="cloud_metrics.period_s.*cloud_metrics.max_series_per_request"):
        load_monitor_config(config)
    config.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_monitor_config(config)


@pytest.fixture
def fleet_url(store_url):
    """The `fleet_db` fleet, on each engine (a store URL)."""
    now = datetime.now(UTC)
    with open_store(store_url, latency_window=8, count_bucket_s=60.0) as store:
        for number, (errors, age_s) in enumerate([(0, 1), (9, 1), (0, 7200), (9, 2), (0, 3)], start=1):
            apply(store, telemetry(f"cam-{number}", 1, at=now - timedelta(seconds=age_s), count=10, errors=errors),
                  received_at=(now - timedelta(seconds=age_s)).timestamp())
        commit(store)
    return store_url


def test_fleet_status_pages_and_filters_by_store_url(fleet_url):
    def status(*options: str) -> dict:
        result = runner.invoke(app, ["fleet", "status", "--json", "--store-url", fleet_url, *options])
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    failing = status("--status", "failing", "--limit", "1")
    assert [d["device_id"] for d in failing["devices"]] == ["cam-2"]
    assert (failing["total"], failing["next_after"]) == (2, "cam-2")
    assert [d["device_id"] for d in status("--status", "failing", "--after", "cam-2")["devices"]] == ["cam-4"]
    tagged = runner.invoke(app, ["fleet", "tag", "cam-5", "--add", "lobby", "--store-url", fleet_url])
    assert tagged.exit_code == 0 and "lobby" in tagged.output, tagged.output
    assert [d["device_id"] for d in status("--tag", "lobby")["devices"]] == ["cam-5"]
    assert status("--status", "stale")["total"] == 1
    unknown = runner.invoke(app, ["fleet", "tag", "cam-99", "--add", "x", "--store-url", fleet_url])
    assert unknown.exit_code != 0 and "never reported" in unknown.output


def test_store_url_of_an_unknown_engine_is_refused_naming_the_fix(tmp_path):
    result = runner.invoke(app, ["fleet", "status", "--store-url", "mysql://fleet@db/fleet"])
    assert result.exit_code != 0
    assert "mysql://" in text(result) and "postgresql://" in text(result)
