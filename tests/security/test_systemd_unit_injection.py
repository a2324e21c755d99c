"""Finding 11: `fleet.yaml`'s `user` went raw into the systemd unit (a newline added directives, e.g. a
second ExecStart running as root) and `%` was not escaped (systemd expands specifiers). Every value
rendered into the unit is now validated or escaped."""

from __future__ import annotations

import pytest

from edgefleet.flows.deploy_agent.service import ServiceSpec, render_unit
from edgefleet.kernel.errors import ConfigError


def spec(**overrides: object) -> ServiceSpec:
    values = {"command": ("/opt/edgefleet/venv/bin/edgefleet-agent", "run", "--config", "/srv/agent/agent.yaml"),
              "user": "edge", "state_dir": "/srv/agent"} | overrides
    return ServiceSpec(**values)


@pytest.mark.parametrize("user", ["edge\nExecStartPre=/bin/sh -c 'id > /tmp/pwned'", "root\rX=1", "Ed ge", "%n"])
def test_a_user_that_would_inject_directives_is_refused(user: str) -> None:
    with pytest.raises(ConfigError, match="user"):
        render_unit(spec(user=user))


def test_newlines_in_any_rendered_value_are_refused() -> None:
    with pytest.raises(ConfigError, match="control character"):
        render_unit(spec(description="agent\n[Service]\nUser=root"))
    with pytest.raises(ConfigError, match="control character"):
        render_unit(spec(command=("/opt/agent", "run\nExecStart=/bin/sh")))


def test_percent_and_dollar_are_escaped() -> None:
    unit = render_unit(spec(description="100% cats", command=("/opt/agent", "--label", "$HOME%h")))
    assert "Description=100%% cats" in unit
    assert '"$$HOME%%h"' in unit
    assert unit.count("ExecStart=") == 1 and unit.count("User=") == 1
