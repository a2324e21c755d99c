"""The agent config's `spot_check` section: off by default (no frame leaves the device), a bucket when on, caps
that agree."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet.device.agent.config import load_config
from edgefleet.device.agent.loop import Agent
from edgefleet.kernel.errors import ConfigError


def _write(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(f"device_id: cam-1\nmodel: birds\nroot: {tmp_path / 'agent'}\n{extra}")
    return path


def test_the_spot_check_is_off_by_default_and_the_agent_builds_none(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, f"registry:\n  uri: {tmp_path / 'registry'}\n"))
    assert config.spot_check.enabled is False
    assert Agent(config).spot_check is None
    assert not (tmp_path / "agent" / "spotcheck-outbox").exists()


def test_on_it_uploads_to_the_model_registry_unless_told_another_bucket(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, f"registry:\n  uri: {tmp_path / 'registry'}\n"
                                          "spot_check:\n  enabled: true\n  share: 0.01\n"))
    assert config.spot_check_registry == str(tmp_path / "registry")
    agent = Agent(config)
    assert agent.spot_check is not None and agent.spot_check.config.share == 0.01
    other = load_config(_write(tmp_path, "spot_check:\n  enabled: true\n  registry: gs://labels-bucket/x\n"))
    assert other.spot_check_registry == "gs://labels-bucket/x"


@pytest.mark.parametrize(("section", "named"), [
    ("spot_check:\n  enabled: true\n", "spot_check.registry"),  # on, with nowhere to send
    ("registry:\n  uri: /r\nspot_check:\n  enabled: true\n  max_per_hour: 50\n  max_per_day: 10\n", "max_per_day"),
    ("registry:\n  uri: /r\nspot_check:\n  enabled: true\n  share: 0\n", "share"),
    ("spot_check:\n  enabeld: true\n", "spot_check.enabeld"),
])
def test_a_wrong_spot_check_section_is_an_error_naming_the_key(tmp_path: Path, section: str, named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path, section))
    assert named in caught.value.message
