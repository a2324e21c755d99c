"""Fixtures of this folder's tests that live in other test modules (the registry and store fixtures come from
tests/device/conftest.py, the parent folder's)."""

from __future__ import annotations

from tests.device.runtime.conftest import tiny_models  # noqa: E402,F401 - fixtures of the moved-in tests
