"""Fixtures for the Pulumi program tests (the harness itself is in pulumi_mocks.py)."""

from __future__ import annotations

import pytest

from tests.infra.support.testing import StackRun, run_program, stack_config


@pytest.fixture(scope="module")
def default_stack() -> StackRun:
    """The program with only `edgefleet:project` set (shared read-only by a module's tests)."""
    from edgefleet.infra.__main__ import build

    config = stack_config()
    return run_program(lambda: build(config))
