"""What Google's `edgetpu_compiler` says, parsed into a `CompilerReport` (pure: no process, no file).

Its stdout gives totals and memory; the operation log (and `-s` stdout) gives the per-operator table, whose
rows not "Mapped to Edge TPU" run on the CPU, with the compiler's reason. See ../shared/edgetpu-compiler/
for the published formats. Running the compiler is `edgefleet.flows.release.compiler`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import NamedTuple

from edgefleet.kernel.contracts.manifest import CompilerReport, CpuOperation
from edgefleet.kernel.errors import EdgefleetError

MAPPED_STATUS = "Mapped to Edge TPU"
OUTPUT_TAIL_LINES = 15

_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
_VERSION = re.compile(r"^Edge TPU Compiler version (\S+)", re.MULTILINE)
_SIZE = r"([0-9.]+)\s*(B|KiB|MiB|GiB)"
_ON_CHIP = re.compile(r"^On-chip memory used for caching model parameters:\s*" + _SIZE, re.MULTILINE)
_OFF_CHIP = re.compile(
    r"^Off-chip memory used for streaming uncached model parameters:\s*" + _SIZE, re.MULTILINE
)
_SUBGRAPHS = re.compile(r"^Number of Edge TPU subgraphs:\s*(\d+)", re.MULTILINE)
_TOTAL = re.compile(r"^Total number of operations:\s*(\d+)", re.MULTILINE)
_ON_TPU = re.compile(r"^Number of operations that will run on Edge TPU:\s*(\d+)", re.MULTILINE)
_ON_CPU = re.compile(r"^Number of operations that will run on CPU:\s*(\d+)", re.MULTILINE)
_TABLE_HEADER = re.compile(r"^Operator\s+Count\s+Status\s*$")
_TABLE_ROW = re.compile(r"^(\S+)\s+(\d+)\s+(\S.*?)\s*$")


class CompileError(EdgefleetError):
    """edgetpu_compiler failed, timed out, or its compile host cannot be reached."""


class CompilerNotFound(CompileError):
    """edgetpu_compiler is not installed where the release looked for it."""


class OperatorRow(NamedTuple):
    """One row of the compiler's operation table."""

    operator: str
    count: int
    status: str


def parse_size(value: str, unit: str) -> int:
    """'24.00', 'KiB' -> 24576 bytes."""
    return round(float(value) * _UNITS[unit])


def parse_operation_table(text: str) -> tuple[OperatorRow, ...]:
    """Rows of every `Operator  Count  Status` table in `text` (stdout with -s, or the .log file)."""
    rows: list[OperatorRow] = []
    in_table = False
    for line in text.splitlines():
        if _TABLE_HEADER.match(line.strip()):
            in_table = True
            continue
        if not in_table:
            continue
        if not line.strip():
            continue
        match = _TABLE_ROW.match(line.strip())
        if match is None:
            in_table = False
            continue
        rows.append(OperatorRow(match.group(1), int(match.group(2)), match.group(3)))
    return tuple(rows)


def cpu_operations(rows: tuple[OperatorRow, ...]) -> tuple[CpuOperation, ...]:
    """The table rows left on the CPU, merged by (operator, reason), in first-seen order."""
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for row in rows:
        if row.status != MAPPED_STATUS:
            counts[(row.operator, row.status)] += row.count
    return tuple(
        CpuOperation(operator=op, count=count, reason=reason) for (op, reason), count in counts.items()
    )


def _int(pattern: re.Pattern[str], text: str) -> int | None:
    match = pattern.search(text)
    return int(match.group(1)) if match else None


def _size(pattern: re.Pattern[str], text: str) -> int:
    match = pattern.search(text)
    return parse_size(match.group(1), match.group(2)) if match else 0


def parse_compiler_output(stdout: str, operation_log: str | None = None) -> CompilerReport:
    """Builds a CompilerReport from the compiler's stdout and (optionally) its operation log.

    Totals come from stdout; when every operation maps, the compiler prints no per-target counts, so all
    operations count as on the Edge TPU. The CPU operators and reasons come from the operation table of the
    log when there is one, else from stdout (`-s`).

    Raises:
        CompileError: stdout has no "Total number of operations" line (not compiler output).
    """
    total = _int(_TOTAL, stdout)
    if total is None:
        raise CompileError(
            f"edgetpu_compiler output has no 'Total number of operations' line: {tail(stdout)!r}",
            "check that the compiler ran to completion (see its output)",
        )
    rows = parse_operation_table(operation_log or "") or parse_operation_table(stdout)
    cpu_ops = cpu_operations(rows)
    on_cpu = _int(_ON_CPU, stdout)
    on_tpu = _int(_ON_TPU, stdout)
    if on_cpu is None:
        on_cpu = total - on_tpu if on_tpu is not None else sum(op.count for op in cpu_ops)
    if on_tpu is None:
        on_tpu = total - on_cpu
    version = _VERSION.search(stdout) or _VERSION.search(operation_log or "")
    return CompilerReport(
        compiler_version=version.group(1) if version else None,
        operations_total=total,
        operations_on_tpu=on_tpu,
        operations_on_cpu=on_cpu,
        cpu_operations=cpu_ops,
        subgraphs=_int(_SUBGRAPHS, stdout) or 0,
        on_chip_memory_bytes=_size(_ON_CHIP, stdout),
        off_chip_memory_bytes=_size(_OFF_CHIP, stdout),
    )


def tail(text: str) -> str:
    """The last lines of a compiler's output, for error messages."""
    return "\n".join(text.strip().splitlines()[-OUTPUT_TAIL_LINES:])
