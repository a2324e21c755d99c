"""One shape for a check and one printer (issue 26, item 4): the table, the JSON list, the markdown table."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from rich.console import Console

from edgefleet.kernel.findings import (
    Finding,
    Status,
    failures,
    findings_json,
    findings_markdown,
    parse_findings,
    print_findings,
    summary,
)

FINDINGS = (
    Finding(name="disk", status=Status.OK, detail="5000 MB free"),
    Finding(name="clock", status=Status.WARN, detail="not synchronized", fix="sudo timedatectl set-ntp true"),
    Finding(name="registry", status=Status.FAIL, detail="gs://b [bold]unreachable[/bold] | 403 :x:", fix="log in"),
    Finding(name="min_tpu_fraction", status=Status.SKIP, detail="not checked: no Edge TPU model"),
)


def _printed(as_json: bool) -> str:
    console = Console(record=True, width=200, color_system=None)
    print_findings(FINDINGS, title="edgefleet check", as_json=as_json, console=console)
    return console.export_text()


def test_the_json_is_the_list_of_findings_and_reads_back_equal() -> None:
    text = _printed(as_json=True)
    assert [item["status"] for item in json.loads(text)] == ["ok", "warn", "fail", "skip"]
    assert all(set(item) == {"name", "status", "detail", "fix"} for item in json.loads(text))
    assert parse_findings(text) == FINDINGS
    assert parse_findings(findings_json(FINDINGS)) == FINDINGS


def test_the_table_has_a_row_per_finding_its_summary_and_no_markup_or_emoji_taken_from_the_text() -> None:
    rows = _printed(as_json=False).splitlines()
    assert rows[0].strip() == "edgefleet check"
    [registry] = [row for row in rows if "registry" in row]
    assert "fail" in registry and "gs://b [bold]unreachable[/bold] | 403 :x:" in registry and "log in" in registry
    assert any("clock" in row and "warn" in row and "set-ntp" in row for row in rows)
    assert rows[-1].strip() == "1 ok, 1 failed, 1 warn, 1 skipped"


def test_the_markdown_table_keeps_a_pipe_in_a_detail_inside_its_cell() -> None:
    lines = findings_markdown(FINDINGS)
    assert lines[:2] == ["| check | status | detail | fix |", "|---|---|---|---|"]
    assert lines[4] == "| registry | **FAIL** | gs://b [bold]unreachable[/bold] \\| 403 :x: | log in |"
    assert len(lines) == 2 + len(FINDINGS)


def test_a_finding_is_frozen_and_its_status_one_of_four() -> None:
    with pytest.raises(ValidationError):
        FINDINGS[0].status = Status.FAIL  # type: ignore[misc]  # frozen: the assignment is what is tested
    with pytest.raises(ValidationError, match="status"):
        parse_findings('[{"name": "x", "status": "broken", "detail": ""}]')
    assert Status("fail") is Status.FAIL and Status.FAIL == "fail"  # a str enum: the JSON's value compares equal


def test_failures_and_summary_count_by_status() -> None:
    assert failures(FINDINGS) == (FINDINGS[2],)
    assert summary(FINDINGS[:1]) == "1 ok, 0 failed"
    assert summary(()) == "0 ok, 0 failed"
