"""`edgefleet config from-stack`: the stack's real outputs (from the program under mocks) become configs that
the agent and the fleet monitor load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from edgefleet.cli import app
from edgefleet.device.agent.config import load_config as load_agent_config
from edgefleet.infra.__main__ import main
from edgefleet.infra.outputs import REQUIRED_OUTPUT_KEYS
from edgefleet.kernel.contracts import layout
from edgefleet.monitor.config import load_monitor_config
from tests.infra.support.testing import PROJECT, pulumi_config, run_program


@pytest.fixture(scope="module")
def stack_outputs() -> dict[str, object]:
    """What `pulumi stack output --json` prints for the program's stack."""
    return run_program(main, config=pulumi_config()).outputs


def _write(tmp_path: Path, outputs: dict[str, object]) -> Path:
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(outputs, indent=4))
    return path


def test_from_stack_writes_configs_the_agent_and_the_monitor_load(
    stack_outputs: dict[str, object], tmp_path: Path
) -> None:
    out_dir = tmp_path / "config"
    result = CliRunner().invoke(
        app,
        [
            "config",
            "from-stack",
            str(_write(tmp_path, stack_outputs)),
            "--out-dir",
            str(out_dir),
            "--device-id",
            "cam-01",
            "--channel",
            "canary",
        ],
    )
    assert result.exit_code == 0, result.output

    agent = yaml.safe_load((out_dir / "agent.yaml").read_text())
    assert agent == {
        "device_id": "cam-01",
        "telemetry": {"pubsub_project": PROJECT, "pubsub_topic": layout.TELEMETRY_TOPIC},
        "registry": {"uri": stack_outputs["registry_uri"], "channel": "canary"},
    }
    agent_config = load_agent_config(out_dir / "agent.yaml", model="mobilenet")
    assert agent_config.telemetry.pubsub_project == PROJECT
    assert agent_config.registry.uri == f"gs://{PROJECT}-edgefleet-registry"

    pipeline = yaml.safe_load((out_dir / "pipeline.yaml").read_text())
    assert pipeline["registry"] == {
        "uri": stack_outputs["registry_uri"],
        "bucket": stack_outputs["registry_bucket"],
    }
    assert pipeline["service_accounts"]["pipeline"] == f"edgefleet-pipeline@{PROJECT}.iam.gserviceaccount.com"
    monitor_config = load_monitor_config(out_dir / "pipeline.yaml")
    assert (monitor_config.project, monitor_config.subscription) == (PROJECT, layout.MONITOR_SUBSCRIPTION)
    # Strict, the default: the device keys from the registry, their records verified by the enrolment key.
    assert monitor_config.identity.registry == stack_outputs["registry_uri"]
    assert monitor_config.identity.enrolment_keys == ("~/.edgefleet/keys/fleet-enrolment.key.pub",)
    assert monitor_config.drift.public_key == Path("~/.edgefleet/keys/release.d").expanduser()  # calibration tables


def test_missing_outputs_are_named_and_nothing_is_written(
    stack_outputs: dict[str, object], tmp_path: Path
) -> None:
    partial = {
        key: value
        for key, value in stack_outputs.items()
        if key not in ("registry_uri", "monitor_service_account")
    }
    out_dir = tmp_path / "config"
    result = CliRunner().invoke(
        app, ["config", "from-stack", str(_write(tmp_path, partial)), "--out-dir", str(out_dir)]
    )
    assert result.exit_code == 2
    assert "missing key 'registry_uri'" in result.output
    assert "missing key 'monitor_service_account'" in result.output
    assert "pulumi stack output --json" in result.output
    assert not out_dir.exists()


def test_existing_configs_are_not_replaced_without_force(
    stack_outputs: dict[str, object], tmp_path: Path
) -> None:
    outputs_file = _write(tmp_path, stack_outputs)
    (tmp_path / "pipeline.yaml").write_text("mine: true\n")
    runner = CliRunner()
    result = runner.invoke(app, ["config", "from-stack", str(outputs_file), "--out-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "already exist" in result.output and "--force" in result.output
    assert (tmp_path / "pipeline.yaml").read_text() == "mine: true\n"
    assert not (tmp_path / "agent.yaml").exists()

    result = runner.invoke(
        app, ["config", "from-stack", str(outputs_file), "--out-dir", str(tmp_path), "--force"]
    )
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((tmp_path / "pipeline.yaml").read_text())["project"] == PROJECT


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("Current stack is dev:\n", "is not JSON"),
        ("[1, 2]", "not a JSON object"),
    ],
)
def test_unreadable_outputs_files_are_explained(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "outputs.json"
    if content is not None:
        path.write_text(content)
    result = CliRunner().invoke(app, ["config", "from-stack", str(path), "--out-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert message in result.output and str(path) in result.output


def test_every_required_output_is_exported(stack_outputs: dict[str, object]) -> None:
    assert set(REQUIRED_OUTPUT_KEYS) <= set(stack_outputs)
