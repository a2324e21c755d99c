"""Fixtures of this folder's tests that live in other test modules."""

from __future__ import annotations

from tests.device.runtime.conftest import tiny_models  # noqa: E402,F401 - fixtures of the moved-in tests
from tests.device.store_fixtures import (  # noqa: E402,F401 - fixtures of the moved-in tests
    gcs_bucket,
    gcs_client,
    gcs_preconditions,
    gcs_registry,
    keys,
    local_registry,
    make_version,
    other_keys,
    registry,
    store,
)
