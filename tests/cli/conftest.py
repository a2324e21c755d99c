"""Fixtures of this folder's tests that live in other test modules."""

from __future__ import annotations

from tests.flows.conftest import (  # noqa: E402,F401 - fixtures of the moved-in tests
    make_params,
    shared_work_dir,
    signing_keys,
    standin_compiler,
    tiny_converted,
    tiny_float,
)
from tests.monitor.conftest import postgres, store_url  # noqa: E402,F401 - fixtures of the moved-in tests
