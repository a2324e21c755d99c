"""One shape for a check and one way to print it (issue 26, item 4).

Every command that checks something (`edgefleet-agent doctor`, `edgefleet cloud check`, `edgefleet config
check-policy`, the release gates) judges into `Finding`s and prints them with `print_findings`: a table, or with
`--json` the list of findings, which `parse_findings` reads back. A `Finding` is one line: what was checked,
ok / warn / fail / skip, what was seen, and what to do about it.

In the kernel because the device's `doctor` uses it (the kernel imports nothing of the project). Python 3.9.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from enum import Enum

from pydantic import BaseModel, ConfigDict, TypeAdapter
from rich.console import Console
from rich.table import Table
from rich.text import Text


class Status(str, Enum):
    """How a check came out: `fail` means the thing cannot do its job; `warn` it does, but worse; `skip` the
    check did not apply (nothing was judged). A `str` enum: it compares with and serializes to its value."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


MARKDOWN_STATUS = {Status.OK: "ok", Status.WARN: "*warn*", Status.FAIL: "**FAIL**", Status.SKIP: "skip"}
STATUS_STYLE = {Status.OK: "green", Status.WARN: "yellow", Status.FAIL: "bold red", Status.SKIP: "dim"}
COLUMNS = ("check", "status", "detail", "fix")


class Finding(BaseModel):
    """One line of a check's report (JSON: {"name", "status", "detail", "fix"}).

    Unknown keys are ignored when read, so an operator reads the findings of a newer agent.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    status: Status
    detail: str
    fix: str | None = None

    @property
    def failed(self) -> bool:
        return self.status is Status.FAIL


_FINDINGS = TypeAdapter(tuple[Finding, ...])


def failures(findings: Iterable[Finding]) -> tuple[Finding, ...]:
    """The findings that failed, in order."""
    return tuple(finding for finding in findings if finding.failed)


def summary(findings: Sequence[Finding]) -> str:
    """`3 ok, 1 failed` (and the warnings and skips when there are any)."""
    count = {status: sum(finding.status is status for finding in findings) for status in Status}
    text = f"{count[Status.OK]} ok, {count[Status.FAIL]} failed"
    if count[Status.WARN]:
        text += f", {count[Status.WARN]} warn"
    if count[Status.SKIP]:
        text += f", {count[Status.SKIP]} skipped"
    return text


def findings_json(findings: Iterable[Finding]) -> str:
    """The `--json` output: a JSON list of findings."""
    return json.dumps([finding.model_dump(mode="json") for finding in findings], indent=2)


def parse_findings(text: str | bytes) -> tuple[Finding, ...]:
    """Findings from `findings_json`'s output (raises pydantic's ValidationError on anything else)."""
    return _FINDINGS.validate_json(text)


def findings_table(findings: Sequence[Finding], title: str) -> Table:
    """The findings as a table: check, status (coloured), detail, fix; the summary as its caption."""
    table = Table(title=title, caption=summary(findings))
    for column in COLUMNS:
        table.add_column(column, overflow="fold")
    for finding in findings:
        # Details and fixes quote paths, URNs and error text: plain Text, never read as markup or emoji codes.
        table.add_row(Text(finding.name), Text(finding.status.value, style=STATUS_STYLE[finding.status]),
                      Text(finding.detail), Text(finding.fix or ""))
    return table


def findings_markdown(findings: Sequence[Finding]) -> list[str]:
    """The findings as the lines of a markdown table (reports read in a browser: the release report)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += [f"| {_cell(f.name)} | {MARKDOWN_STATUS[f.status]} | {_cell(f.detail)} | {_cell(f.fix or '')} |"
              for f in findings]
    return lines


def print_findings(findings: Sequence[Finding], *, title: str, as_json: bool = False,
                   console: Console | None = None) -> None:
    """Prints the findings: the table, or with `as_json` the JSON list (on stdout, nothing else)."""
    console = console or Console(highlight=False)
    if as_json:
        console.out(findings_json(findings), highlight=False)
    else:
        console.print(findings_table(findings, title))


def _cell(text: str) -> str:
    """Text in a markdown table cell: its own pipes and line breaks do not end the cell."""
    return text.replace("|", "\\|").replace("\n", " ")
