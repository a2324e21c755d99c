"""Fixtures of this folder's tests: the model store's (tests/device/store_fixtures.py, registered for every folder
by tests/conftest.py), with the store tests' own GCS bucket rather than tests/flows' release bucket."""

from __future__ import annotations

from tests.device.store_fixtures import gcs_bucket  # noqa: F401 - overrides tests/flows/conftest.py's
