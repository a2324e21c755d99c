"""The one config loader: YAML 1.1's surprises, errors that name the file, the field and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from edgefleet.flows.release.params import load_params
from edgefleet.kernel.configfile import load, parse_yaml
from edgefleet.kernel.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "flows/src/edgefleet/flows" / "release" / "release.example.yaml"


def test_compile_mode_off_in_a_release_config_reads_as_off(tmp_path: Path) -> None:
    # PyYAML resolves YAML 1.1 booleans: `mode: off` was `False`, which compile.mode refused.
    config = tmp_path / "release.yaml"
    config.write_text(EXAMPLE.read_text().replace("mode: local ", "mode: off   "))
    assert "mode: off" in config.read_text()
    assert load_params(config).compile.mode == "off"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    switch: Literal["on", "off", "auto"] = "auto"
    answer: str = ""
    enabled: bool = False
    count: int | None = None


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    section: _Section = _Section()


def test_yaml_1_1_booleans_stay_strings_where_a_string_is_meant(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("name: no\nsection: {switch: on, answer: yes, enabled: yes, count: ~}\n")
    config = load(_Config, path, what="test config", missing_fix="create it")
    assert config == _Config(name="no", section=_Section(switch="on", answer="yes", enabled=True))
    path.write_text("name: n\nsection: {switch: off, enabled: Off}\n")
    assert load(_Config, path, what="test config", missing_fix="create it").section == _Section(switch="off")
    assert parse_yaml("a: true\nb: FALSE\nc: OFF\nd: y\n") == {"a": True, "b": False, "c": "OFF", "d": "y"}


def test_a_wrong_key_names_the_file_the_key_and_the_fix_keeping_the_cause(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("name: x\nsection: {swtich: on}\n")
    with pytest.raises(ConfigError) as caught:
        load(_Config, path, what="test config", missing_fix="create it")
    assert str(path) in caught.value.message and "unknown key 'section.swtich'" in caught.value.message
    assert "_Config" in caught.value.fix
    assert isinstance(caught.value.__cause__, ValidationError)
    path.write_text("section: {switch: maybe}\n")
    with pytest.raises(ConfigError, match="missing key 'name'.*key 'section.switch'"):
        load(_Config, path, what="test config", missing_fix="create it")


def test_overrides_win_none_is_ignored_and_a_section_may_hold_the_config(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("mine: {name: file}\nother: {anything: 1}\n")
    config = load(_Config, path, what="test config", missing_fix="create it", section="mine",
                  overrides={"name": None, "section": {"count": 3}})
    assert config == _Config(name="file", section=_Section(count=3))
    assert load(_Config, None, what="flags", missing_fix="", overrides={"name": "cli"}).name == "cli"
    with pytest.raises(ConfigError, match="does not exist") as caught:
        load(_Config, tmp_path / "absent.yaml", what="test config", missing_fix="create it")
    assert caught.value.fix == "create it" and isinstance(caught.value.__cause__, FileNotFoundError)
