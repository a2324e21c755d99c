"""Fixtures of this folder's tests that live in other test modules."""

from __future__ import annotations

from tests.monitor.conftest import monitor_config, telemetry_topic  # noqa: E402,F401 - fixtures of the moved-in tests
