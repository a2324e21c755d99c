"""Release gates and the release report (pure functions: numbers in, verdicts and markdown out).

A gate that fails stops the release before anything reaches the registry; the report says which gate, by
how much, and what to try.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from edgefleet.device.contracts.manifest import CompilerReport
from edgefleet.flows.release.evaluate import Evaluation
from edgefleet.flows.release.params import GateParams, ReleaseParams

PERCENT = 100.0
KIB = 1024.0
_ARTIFACT_KEY_INVALID = re.compile(r"[^a-z0-9-]+")


class GateResult(NamedTuple):
    """One gate's verdict.

    Attributes:
        name: Gate name (the GateParams field it checks).
        passed: True when met (or not checked).
        checked: False when the gate did not apply (e.g. TPU fraction with no compiled model).
        measured: What was measured, in the gate's unit.
        limit: The configured limit.
        detail: One sentence: the measurement against the limit, and by how much it misses.
        advice: What to try when it fails.
    """

    name: str
    passed: bool
    checked: bool
    measured: float | None
    limit: float
    detail: str
    advice: str = ""


def accuracy_drop_gate(evaluation: Evaluation, gates: GateParams, representative_samples: int) -> GateResult:
    """int8 accuracy may be at most `max_accuracy_drop_points` below float accuracy."""
    drop, limit = evaluation.drop_points, gates.max_accuracy_drop_points
    passed = drop <= limit
    detail = (
        f"int8 accuracy {evaluation.int8_accuracy:.2%} vs float {evaluation.float_accuracy:.2%}: a drop of "
        f"{drop:.2f} points (limit {limit:.2f})"
    )
    if not passed:
        detail += f", {drop - limit:.2f} points over"
    advice = (
        ""
        if passed
        else f"calibrate on more images (quantization.representative_samples, now {representative_samples}); "
        "train longer or on more varied data so activations are less extreme; or accept a larger drop "
        "(gates.max_accuracy_drop_points)"
    )
    return GateResult("max_accuracy_drop_points", passed, True, drop, limit, detail, advice)


def int8_accuracy_gate(evaluation: Evaluation, gates: GateParams) -> GateResult:
    """int8 accuracy on the held-out split must be at least `min_int8_accuracy`."""
    value, limit = evaluation.int8_accuracy, gates.min_int8_accuracy
    passed = value >= limit
    detail = f"int8 accuracy {value:.2%} on {evaluation.samples} held-out images (minimum {limit:.2%})"
    if not passed:
        detail += f", {(limit - value) * PERCENT:.2f} points short"
    advice = (
        ""
        if passed
        else "train for more epochs (training.epochs), add images per class, or use a larger architecture "
        "(training.architecture: mobilenet_v2)"
    )
    return GateResult("min_int8_accuracy", passed, True, value, limit, detail, advice)


def tpu_fraction_gate(
    report: CompilerReport | None, gates: GateParams, skipped_reason: str | None
) -> GateResult:
    """At least `min_tpu_fraction` of the operations must map to the Edge TPU (only when compiled)."""
    limit = gates.min_tpu_fraction
    if report is None:
        return GateResult(
            "min_tpu_fraction",
            True,
            False,
            None,
            limit,
            f"not checked: no Edge TPU model ({skipped_reason or 'not compiled'})",
        )
    fraction = report.tpu_fraction
    passed = fraction >= limit
    detail = (
        f"{report.operations_on_tpu} of {report.operations_total} operations on the Edge TPU "
        f"({fraction:.1%}, minimum {limit:.1%})"
    )
    if not passed:
        detail += f", {(limit - fraction) * PERCENT:.1f} points short"
    on_cpu = "; ".join(f"{op.operator} x{op.count}: {op.reason}" for op in report.cpu_operations)
    advice = (
        ""
        if passed
        else f"replace the operators left on the CPU ({on_cpu or 'see the operation log'}) with ones the "
        "Edge TPU supports (g.co/coral/model-reqs); keep every shape static; or lower gates.min_tpu_fraction"
    )
    return GateResult("min_tpu_fraction", passed, True, fraction, limit, detail, advice)


def check_gates(
    evaluation: Evaluation,
    compiler: CompilerReport | None,
    skipped_reason: str | None,
    gates: GateParams,
    representative_samples: int,
) -> tuple[GateResult, ...]:
    """All gates of a release, in report order."""
    return (
        accuracy_drop_gate(evaluation, gates, representative_samples),
        int8_accuracy_gate(evaluation, gates),
        tpu_fraction_gate(compiler, gates, skipped_reason),
    )


def failed(gates: tuple[GateResult, ...]) -> tuple[GateResult, ...]:
    """The gates that did not pass."""
    return tuple(gate for gate in gates if not gate.passed)


def artifact_key(model: str, what: str) -> str:
    """A stable Prefect artifact key per model (lowercase letters, digits and dashes only)."""
    return _ARTIFACT_KEY_INVALID.sub("-", f"release-{model}-{what}".lower()).strip("-")


def _kib(size: int | None) -> str:
    return "-" if size is None else f"{size / KIB:.1f} KiB"


class ReportInputs(NamedTuple):
    """Everything the release report shows."""

    params: ReleaseParams
    version: str
    dataset_source: str
    labels: tuple[str, ...]
    train_count: int
    eval_count: int
    skipped_images: tuple[tuple[str, str], ...]
    evaluation: Evaluation
    compiler: CompilerReport | None
    compile_skipped_reason: str | None
    edgetpu_size_bytes: int | None
    gates: tuple[GateResult, ...]
    published: bool
    outcome: str
    version_uri: str | None
    channel_uri: str | None
    signing_key: str
    training_cached: bool


def render_report(inputs: ReportInputs) -> str:
    """The markdown release report (the Prefect artifact and `edgefleet release`'s summary)."""
    p, e = inputs.params, inputs.evaluation
    verdict = "PUBLISHED" if inputs.published else "NOT PUBLISHED"
    lines = [f"# Release {p.model} {inputs.version}: {verdict}", "", inputs.outcome, ""]
    lines += [
        "## Quality (held-out split)",
        "",
        "| | float32 | int8 | change |",
        "|---|---|---|---|",
        f"| accuracy | {e.float_accuracy:.2%} | {e.int8_accuracy:.2%} | "
        f"{(e.int8_accuracy - e.float_accuracy) * PERCENT:+.2f} points |",
        f"| TFLite size | {_kib(e.float_size_bytes)} | {_kib(e.int8_size_bytes)} | x{e.size_ratio:.2f} |",
        "",
        f"int8 and float agree on {e.agreement:.1%} of {e.samples} held-out images; int8 CPU latency here "
        f"{e.int8_latency_ms:.2f} ms (median, this machine, not a device).",
        "",
    ]
    lines += ["## Gates", "", "| gate | result | detail |", "|---|---|---|"]
    for gate in inputs.gates:
        result = (
            "pass" if gate.passed and gate.checked else ("not checked" if not gate.checked else "**FAIL**")
        )
        lines.append(f"| {gate.name} | {result} | {gate.detail} |")
    for gate in failed(inputs.gates):
        lines += ["", f"**{gate.name} failed.** Try: {gate.advice}."]
    lines += ["", "## Edge TPU compiler", ""]
    if inputs.compiler is None:
        lines += [
            f"**No Edge TPU model in this release: {inputs.compile_skipped_reason}.** Only the CPU model "
            "ships; devices run it on the CPU (slower than on the Edge TPU). Install `edgetpu_compiler` "
            "(x86-64 Linux) or set compile.mode: ssh with a compile host to add the Edge TPU variant.",
            "",
        ]
    else:
        c = inputs.compiler
        lines += [
            f"- compiler {c.compiler_version or 'version unknown'}; {c.subgraphs} Edge TPU subgraph(s)",
            f"- operations: {c.operations_on_tpu} of {c.operations_total} on the Edge TPU "
            f"({c.tpu_fraction:.1%}), {c.operations_on_cpu} on the CPU",
            f"- parameter memory: {_kib(c.on_chip_memory_bytes)} on-chip, "
            f"{_kib(c.off_chip_memory_bytes)} streamed off-chip",
            f"- Edge TPU model size: {_kib(inputs.edgetpu_size_bytes)}",
        ]
        if c.cpu_operations:
            lines += ["", "| operator on CPU | count | reason |", "|---|---|---|"]
            lines += [f"| {op.operator} | {op.count} | {op.reason} |" for op in c.cpu_operations]
        lines.append("")
    lines += [
        "## Data and training",
        "",
        f"- dataset: {inputs.dataset_source} ({len(inputs.labels)} classes: {', '.join(inputs.labels)})",
        f"- {inputs.train_count} training / {inputs.eval_count} held-out images; "
        f"{len(inputs.skipped_images)} unreadable image(s) skipped",
        f"- model: {p.training.keras_model or p.training.architecture}, input {p.training.input_size}x"
        f"{p.training.input_size}x3"
        + ("" if p.training.keras_model else f", {p.training.epochs} epochs, seed {p.training.seed}")
        + (" (training reused from the task cache)" if inputs.training_cached else ""),
    ]
    lines += [f"  - skipped: `{path}`: {reason}" for path, reason in inputs.skipped_images]
    lines += [
        "",
        "## Registry",
        "",
        f"- registry: {p.registry}",
        f"- version: {inputs.version_uri or 'not published'}",
        f"- channel: {inputs.channel_uri or 'not moved'}",
        f"- manifest signed with {inputs.signing_key}",
        "",
    ]
    return "\n".join(lines)


def per_class_table(evaluation: Evaluation) -> list[dict[str, object]]:
    """Rows of the per-class accuracy artifact."""
    return [
        {
            "class": row.label,
            "held-out images": row.samples,
            "float accuracy": round(row.float_accuracy, 4),
            "int8 accuracy": round(row.int8_accuracy, 4),
        }
        for row in evaluation.per_class
    ]
