"""The store URL of the monitor config: which engine, where, and clear errors that never show a password."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet.kernel.errors import ConfigError
from edgefleet.monitor.config import MonitorConfig, load_monitor_config
from edgefleet.monitor.errors import FleetStateError
from edgefleet.monitor.store import open_fleet_store, open_store
from edgefleet.monitor.store_engine import StoreLocation, parse_store_url, redact


def test_sqlite_urls_follow_sqlalchemys_spelling() -> None:
    assert parse_store_url("sqlite:///fleet.sqlite") == StoreLocation("sqlite", path=Path("fleet.sqlite"))
    assert parse_store_url("sqlite:////var/lib/fleet.sqlite") == StoreLocation(
        "sqlite", path=Path("/var/lib/fleet.sqlite"))
    assert parse_store_url("postgresql://fleet@db:5432/fleet").engine == "postgresql"
    assert parse_store_url("postgres://fleet@db/fleet").engine == "postgresql"


def test_without_a_url_the_sqlite_file_stays_the_default(tmp_path) -> None:
    config = MonitorConfig(store_path=tmp_path / "fleet.sqlite")
    assert config.store_location == tmp_path / "fleet.sqlite"
    with open_fleet_store(config) as store:
        assert store.engine.name == "sqlite" and (tmp_path / "fleet.sqlite").is_file()


def test_a_configured_url_chooses_the_engine(tmp_path, postgres) -> None:
    config_file = tmp_path / "monitor.yaml"
    config_file.write_text(f"monitor:\n  store:\n    url: '{postgres.new_database()}'\n")
    with open_fleet_store(load_monitor_config(config_file)) as store:
        assert store.engine.name == "postgresql"
        assert store.connection.execute("SELECT value FROM meta").fetchone()[0] == "5"


def test_an_unknown_scheme_is_a_config_error_naming_the_key(tmp_path) -> None:
    config_file = tmp_path / "monitor.yaml"
    config_file.write_text("monitor:\n  store:\n    url: 'mysql://fleet:hunter2@db/fleet'\n")
    with pytest.raises(ConfigError) as error:
        load_monitor_config(config_file)
    assert "store.url" in str(error.value) and "postgresql://" in str(error.value)
    assert "hunter2" not in str(error.value)


def test_an_unreachable_database_is_named_without_its_password(tmp_path) -> None:
    url = f"postgresql://fleet:hunter2@/fleet?host={tmp_path}&port=1"  # no server listens on that socket
    assert redact(url) == f"postgresql://fleet:***@/fleet?host={tmp_path}&port=1"
    with pytest.raises(FleetStateError) as error:
        open_store(url, latency_window=4, count_bucket_s=60.0)
    assert "fleet:***@" in error.value.message and "hunter2" not in str(error.value)
    assert "URL" in error.value.fix
