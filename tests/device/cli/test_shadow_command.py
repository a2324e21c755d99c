"""`edgefleet-agent shadow MODEL --json`: the shadow report's age on the device's boot clock (issue 24), never a
number the wall clock made up. The report files here are written as the agents write them (this version's, with
the boot stamp, and the previous version's, without); the rollout's reading of `report` keeps its old shape."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from edgefleet.device.agent.shadow_stats import SHADOW_REPORT_FILE, ShadowReport
from edgefleet.device.cli import app
from edgefleet.kernel.contracts.status import read_boot_id

MODEL = "imagenet"
THIS_BOOT = read_boot_id()
on_linux = pytest.mark.skipif(THIS_BOOT is None, reason="needs Linux's boot id (/proc/sys/kernel/random/boot_id)")


def write_report(root: Path, updated_at: datetime, boot: dict[str, Any] | None = None) -> None:
    """A report as an agent writes it; `boot` None: as the agent before the boot stamp wrote it (no `boot`)."""
    report = ShadowReport(device_id="d", model=MODEL, candidate="2.0.0", primary="1.0.0", share=0.1,
                          since=updated_at, updated_at=updated_at)
    raw = json.loads(report.model_dump_json(by_alias=True))
    raw.pop("boot", None)
    if boot is not None:
        raw["boot"] = boot
    (root / SHADOW_REPORT_FILE).write_text(json.dumps(raw))


def shown(root: Path, *options: str) -> Any:  # noqa: ANN401 - the command's JSON, or its text
    result = CliRunner().invoke(app, ["shadow", MODEL, "--root", str(root), *options])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout) if "--json" in options else result.stdout


def test_a_report_of_the_previous_agent_stamped_in_the_future_has_no_age_and_says_why(tmp_path: Path) -> None:
    """The wall clock stepped back since the previous agent wrote it: before, `report_age_s` read 0 (fresh)."""
    write_report(tmp_path, datetime.now(timezone.utc) + timedelta(hours=1))
    payload = shown(tmp_path, "--json")
    assert payload["report_age_s"] is None, payload
    assert payload["report_age_clock"] == "wall"
    assert "wall clock ahead" in payload["report_age_note"] and "no boot-clock stamp" in payload["report_age_note"]
    assert payload["report"]["candidate"] == "2.0.0"  # the report itself is read as before
    assert "age unknown: wall clock ahead" in shown(tmp_path)


def test_a_report_of_the_previous_agent_in_the_past_is_aged_on_the_wall_clock_and_says_so(tmp_path: Path) -> None:
    write_report(tmp_path, datetime.now(timezone.utc) - timedelta(hours=1))
    payload = shown(tmp_path, "--json")
    assert payload["report_age_s"] >= 3600 and payload["report_age_clock"] == "wall"
    assert "judged on the device's wall clock" in payload["report_age_note"]


@on_linux
def test_a_report_stamped_on_this_boot_is_aged_on_the_boot_clock_whatever_its_wall_time(tmp_path: Path) -> None:
    """Written 5 s ago on the boot clock; the wall clock was then an hour ahead (stepped back since, by NTP)."""
    written_s = time.monotonic() - 5
    write_report(tmp_path, datetime.now(timezone.utc) + timedelta(hours=1),
                 boot={"boot_id": THIS_BOOT, "started_s": written_s - 60, "updated_s": written_s})
    payload = shown(tmp_path, "--json")
    assert payload["report_age_clock"] == "boot" and payload["report_age_note"] is None
    assert 5 <= payload["report_age_s"] < 3600  # not 0 (the wall clock's), not an hour
    assert "boot" not in payload["report"]  # the report as the rollout reads it (shadow/1: extra fields refused)
    assert ShadowReport.model_validate(payload["report"]).candidate == "2.0.0"
    assert "s old" in shown(tmp_path)


@on_linux
def test_a_report_written_in_an_earlier_boot_has_no_age(tmp_path: Path) -> None:
    """A stale report the reboot left in the agent root (without systemd's runtime directory)."""
    write_report(tmp_path, datetime.now(timezone.utc) - timedelta(seconds=1),
                 boot={"boot_id": "another-boot", "started_s": 10.0, "updated_s": 20.0})
    payload = shown(tmp_path, "--json")
    assert payload["report_age_s"] is None and payload["report_age_clock"] == "boot"
    assert "written before the last reboot" in payload["report_age_note"]
    assert "written before the last reboot" in shown(tmp_path)


def test_no_report_has_no_age(tmp_path: Path) -> None:
    payload = shown(tmp_path, "--json")
    assert (payload["report"], payload["report_age_s"], payload["report_age_clock"]) == (None, None, None)
    assert "report: none" in shown(tmp_path)
