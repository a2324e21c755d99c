"""Attack tests (issue 11): each reproduces an attack from the security review and shows it now fails.

The store and registry fixtures are those of the model store tests (tests/device/store_fixtures.py, registered
by tests/conftest.py): real keys, real files, the real GCS emulator (with generation preconditions enforced, so
compare-and-swap cannot pass falsely).
"""

from __future__ import annotations

from tests.flows.conftest import (  # noqa: F401 - the release fixtures, for the compile host attack test
    make_params,
    shared_work_dir,
    signing_keys,
    ssh_compile_host,
    standin_compiler,
    tiny_converted,
    tiny_int8,
)
from tests.flows.rollout.conftest import agent_user, readable_dir  # noqa: E402,F401 - deploy-agent's own user, readable dirs
from tests.monitor.conftest import monitor_config, telemetry_topic  # noqa: E402,F401 - the emulator topic
from tests.security.device_keys import fleet, fleet_state  # noqa: E402,F401 - the device key record attack tests
