"""`edgefleet-agent doctor`: every check run in order on a host with a crashing Edge TPU stand-in, as JSON (what a
rollout's preflight reads) and as a table."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from edgefleet.device.cli import app
from edgefleet.device.doctor import DoctorReport
from edgefleet.kernel.findings import Status, summary
from tests.device.agent.test_loop import MODEL


def test_doctor_json_lists_every_check_and_exits_1_on_a_failure(releases, standin_library, monkeypatch):
    monkeypatch.setenv("STANDIN_EDGETPU_DEVICES", "usb:0")
    monkeypatch.setenv("STANDIN_EDGETPU_FAULT", "segv")
    releases.install("1.0.0", edgetpu_variant=True)
    (releases.root / "agent.yaml").write_text(
        f"device_id: cam-1\nmodel: {MODEL}\ninference:\n  edgetpu_library: {standin_library}\n")

    result = CliRunner().invoke(app, ["doctor", "--root", str(releases.root), "--json"])

    assert result.exit_code == 1, result.output
    checks = json.loads(result.stdout)["checks"]
    assert all(set(check) == {"name", "status", "detail", "fix"} for check in checks)
    by_name = {check["name"]: check for check in checks}
    assert [name for name in by_name] == [
        "config", "python", "runtime", "libedgetpu", "edgetpu_devices", "device_permissions", "store", "spool",
        "disk", "clock", "credentials", "registry", "pubsub", "telemetry", "public_key"]
    assert by_name["libedgetpu"]["status"] == "fail" and "SIGSEGV" in by_name["libedgetpu"]["detail"]
    assert "model_edgetpu.tflite" in by_name["libedgetpu"]["detail"]
    assert by_name["config"]["status"] == "ok" and by_name["public_key"]["status"] == "ok"
    assert by_name["store"]["status"] == "ok"
    report = DoctorReport.model_validate_json(result.stdout)  # what a rollout's preflight reads: Findings
    assert [check.name for check in report.checks] == list(by_name)
    assert [check.name for check in report.failed] == ["libedgetpu"] and report.checks[3].status is Status.FAIL

    table = CliRunner().invoke(app, ["doctor", "--root", str(releases.root)], env={"COLUMNS": "400"})
    assert table.exit_code == 1, table.output
    [row] = [line for line in table.output.splitlines() if "libedgetpu" in line and "SIGSEGV" in line]
    assert "fail" in row
    assert summary(report.checks).startswith(f"{sum(c['status'] == 'ok' for c in checks)} ok, 1 failed")
    assert summary(report.checks) in table.output
