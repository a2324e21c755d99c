"""The model store's registry fixtures (real keys, a real local registry) for the channel tests."""

from __future__ import annotations

from tests.device.store_fixtures import keys, local_registry, make_version  # noqa: F401 - fixtures re-exported
