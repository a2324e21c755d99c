"""Fixtures of this folder's tests that live in other test modules."""

from __future__ import annotations

from tests.flows.rollout.conftest import _emulator_env_restored, start_world, world  # noqa: E402,F401 - fixtures of the moved-in tests
