"""Fixtures of this folder's tests that live in other test modules."""

from __future__ import annotations

from tests.device.store_fixtures import keys  # noqa: E402,F401 - fixtures of the moved-in tests
