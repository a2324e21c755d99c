"""Issue 23, item 4, end to end through the commands an operator and a device run: `edgefleet fleet enrol-token
create`, `edgefleet-agent enrol --token-file`, `edgefleet fleet enrol-approve`; the monitor then trusts the
device, and a second use of the same token file enrols nobody else."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from edgefleet.cli import app
from edgefleet.device.cli import app as agent
from edgefleet.kernel.trust.signatures import save_private_key
from tests.security.device_keys import Fleet, applied, refused
from tests.security.enrolment import Enrolment


def test_a_device_enrols_by_token_through_the_commands(fleet: Fleet, fleet_state, tmp_path: Path) -> None:
    key_file = save_private_key(fleet.enrolment, fleet.root / "enrolment.key")
    common = ["--registry", str(fleet.registry.root), "--enrolment-key", str(key_file)]
    minted = CliRunner().invoke(app, ["fleet", "enrol-token", "create", "cam-1", "--expires", "2h", *common])
    assert minted.exit_code == 0, minted.output
    device_id, token = minted.stdout.splitlines()[0].split()
    assert device_id == "cam-1" and token.startswith("eft1.")
    assert token not in (fleet.registry.root / "fleet").joinpath("enrol-tokens").iterdir().__next__().read_text()
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    enrolment = Enrolment(fleet, tmp_path)
    device = ["enrol", "--device-id", "cam-1", "--registry", str(fleet.registry.root), "--token-file", str(token_file)]
    filed = CliRunner().invoke(agent, [*device, "--root", str(enrolment.device_root("cam-1"))])
    assert filed.exit_code == 0 and "filed enrolment request for cam-1" in filed.output, filed.output
    approved = CliRunner().invoke(app, ["fleet", "enrol-approve", *common])
    assert approved.exit_code == 0 and "ENROLLED" in approved.output and "1 enrolled" in approved.output
    waited = CliRunner().invoke(agent, [*device, "--root", str(enrolment.device_root("cam-1")), "--wait", "30"])
    assert waited.exit_code == 0 and "enrolled: the fleet's record for cam-1" in waited.output, waited.output
    CliRunner().invoke(agent, [*device, "--root", str(enrolment.device_root("copy"))])  # the token file, copied
    again = CliRunner().invoke(app, ["fleet", "enrol-approve", *common])
    assert "0 enrolled" in again.output and "used" in again.output
    monitor = fleet.monitor()
    assert applied(fleet.send(fleet_state, monitor, "cam-1", enrolment.device_key("cam-1")))
    assert refused(fleet.send(fleet_state, monitor, "cam-1", enrolment.device_key("copy")))


def test_enrol_without_a_token_says_how_to_get_one(tmp_path: Path) -> None:
    result = CliRunner().invoke(agent, ["enrol", "--device-id", "cam-1", "--registry", str(tmp_path),
                                        "--root", str(tmp_path / "root")], env={"EDGEFLEET_ENROL_TOKEN": ""})
    assert result.exit_code != 0 and "enrol-token create" in result.output


def test_a_bad_expiry_is_named(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["fleet", "enrol-token", "create", "cam-1", "--expires", "tomorrow",
                                      "--registry", str(tmp_path)])
    assert result.exit_code != 0 and "--expires" in result.output
