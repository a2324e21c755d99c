"""Release gates and the release report (pure functions: numbers in, verdicts and markdown out).

A gate that fails stops the release before anything reaches the registry; the report says which gate, by
how much, and what to try.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from edgefleet.flows.release.evaluate import Evaluation
from edgefleet.flows.release.params import GateParams, ReleaseParams
from edgefleet.kernel.contracts.manifest import CompilerReport
from edgefleet.kernel.findings import Finding, Status, findings_markdown

PERCENT = 100.0
KIB = 1024.0
LABELS_SHOWN = 12
NO_DATASET = "not checked: no dataset (a brought model released without evaluation)"
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

    @property
    def finding(self) -> Finding:
        """The gate as a check's finding: ok, fail (with the advice as its fix), or skip when not checked."""
        status = Status.SKIP if not self.checked else Status.OK if self.passed else Status.FAIL
        return Finding(name=self.name, status=status, detail=self.detail, fix=self.advice or None)


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


def int8_accuracy_gate(evaluation: Evaluation, gates: GateParams, trained_here: bool = True) -> GateResult:
    """int8 accuracy on the held-out split must be at least `min_int8_accuracy`."""
    value, limit = evaluation.int8_accuracy, gates.min_int8_accuracy
    passed = value >= limit
    detail = f"int8 accuracy {value:.2%} on {evaluation.samples} held-out images (minimum {limit:.2%})"
    if not passed:
        detail += f", {(limit - value) * PERCENT:.2f} points short"
    if passed:
        advice = ""
    elif trained_here:
        advice = (
            "train for more epochs (training.epochs), add images per class, or use a larger architecture "
            "(training.architecture: mobilenet_v2, pretrained: training.weights)"
        )
    else:
        advice = (
            "check that each class folder is named after the model's label for it; otherwise the brought "
            "model does not do well on these images: retrain it where it was made, or lower "
            "gates.min_int8_accuracy"
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


def _not_checked(name: str, limit: float, why: str) -> GateResult:
    return GateResult(name, True, False, None, limit, why)


def check_gates(
    evaluation: Evaluation | None,
    compiler: CompilerReport | None,
    skipped_reason: str | None,
    gates: GateParams,
    representative_samples: int,
    *,
    has_float: bool = True,
    precompiled: bool = False,
) -> tuple[GateResult, ...]:
    """All gates of a release, in report order.

    Args:
        evaluation: None when there was no dataset (a brought model): the accuracy gates are not checked.
        has_float: False for a brought int8 model (no float twin: the drop gate is not checked).
        precompiled: The Edge TPU variant was brought compiled (no compiler report: TPU fraction not checked).
    """
    drop_limit, int8_limit = gates.max_accuracy_drop_points, gates.min_int8_accuracy
    if evaluation is None:
        drop = _not_checked("max_accuracy_drop_points", drop_limit, NO_DATASET)
        int8 = _not_checked("min_int8_accuracy", int8_limit, NO_DATASET)
    else:
        drop = (
            accuracy_drop_gate(evaluation, gates, representative_samples)
            if has_float
            else _not_checked("max_accuracy_drop_points", drop_limit, "not checked: brought as int8, no float model")
        )
        int8 = int8_accuracy_gate(evaluation, gates, trained_here=has_float)
    if precompiled:
        tpu = _not_checked(
            "min_tpu_fraction", gates.min_tpu_fraction, "not checked: the Edge TPU model was brought compiled"
        )
    else:
        tpu = tpu_fraction_gate(compiler, gates, skipped_reason)
    return drop, int8, tpu


def failed(gates: tuple[GateResult, ...]) -> tuple[GateResult, ...]:
    """The gates that did not pass."""
    return tuple(gate for gate in gates if not gate.passed)


def gate_findings(gates: tuple[GateResult, ...]) -> tuple[Finding, ...]:
    """The gates as findings, in report order (what the report's gate table and `--json` consumers read)."""
    return tuple(gate.finding for gate in gates)


def artifact_key(model: str, what: str) -> str:
    """A stable Prefect artifact key per model (lowercase letters, digits and dashes only)."""
    return _ARTIFACT_KEY_INVALID.sub("-", f"release-{model}-{what}".lower()).strip("-")


def _kib(size: int | None) -> str:
    return "-" if size is None else f"{size / KIB:.1f} KiB"


class CandidateSummary(NamedTuple):
    """What the release report says about where the model and its figures come from."""

    model_description: str
    dataset_source: str | None
    labels: tuple[str, ...]
    train_count: int
    eval_count: int
    skipped_images: tuple[tuple[str, str], ...]
    training_cached: bool

    @property
    def skipped_count(self) -> int:
        return len(self.skipped_images)


class ReportInputs(NamedTuple):
    """Everything the release report shows."""

    params: ReleaseParams
    version: str
    candidate: CandidateSummary
    evaluation: Evaluation | None
    compiler: CompilerReport | None
    compile_skipped_reason: str | None
    edgetpu_size_bytes: int | None
    gates: tuple[GateResult, ...]
    published: bool
    outcome: str
    version_uri: str | None
    channel_uri: str | None
    signing_key: str


def _quality(e: Evaluation | None, brought: bool) -> list[str]:
    if e is None:
        return [
            "## Quality",
            "",
            "**Not evaluated: no dataset was given.** No accuracy gate was checked and the release has no "
            "reference distributions for the canary analysis (class mix, scores); devices still smoke-test "
            "it with its golden outputs before swapping it in. Give `dataset` (class folders named after "
            "the model's labels) to measure it.",
            "",
        ]
    if brought:
        return [
            "## Quality (every dataset image: nothing was trained on them)",
            "",
            f"int8 top-1 accuracy **{e.int8_accuracy:.2%}** of {e.samples} images, through the device runtime; "
            f"TFLite size {_kib(e.int8_size_bytes)}; CPU latency here {e.int8_latency_ms:.2f} ms (median, this "
            "machine, not a device). Brought as int8: no float model to compare with.",
            "",
        ]
    return [
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


def _labels_line(labels: tuple[str, ...]) -> str:
    shown = ", ".join(labels[:LABELS_SHOWN])
    return f"{len(labels)} classes: {shown}" + (", ..." if len(labels) > LABELS_SHOWN else "")


def render_report(inputs: ReportInputs) -> str:
    """The markdown release report (the Prefect artifact and `edgefleet release`'s summary)."""
    p, c = inputs.params, inputs.candidate
    verdict = "PUBLISHED" if inputs.published else "NOT PUBLISHED"
    lines = [f"# Release {p.model} {inputs.version}: {verdict}", "", inputs.outcome, ""]
    lines += _quality(inputs.evaluation, p.brought)
    lines += ["## Gates", "", *findings_markdown(gate_findings(inputs.gates))]
    lines += ["", "## Edge TPU compiler", ""]
    if inputs.compiler is None and inputs.edgetpu_size_bytes is not None:
        lines += [
            f"The Edge TPU model was brought compiled ({_kib(inputs.edgetpu_size_bytes)}): no compiler report "
            "here, so the share of operations on the Edge TPU is not known (`min_tpu_fraction` not checked).",
            "",
        ]
    elif inputs.compiler is None:
        lines += [
            f"**No Edge TPU model in this release: {inputs.compile_skipped_reason}.** Only the CPU model "
            "ships; devices run it on the CPU (slower than on the Edge TPU). Install `edgetpu_compiler` "
            "(x86-64 Linux) or set compile.mode: ssh with a compile host to add the Edge TPU variant.",
            "",
        ]
    else:
        cr = inputs.compiler
        lines += [
            f"- compiler {cr.compiler_version or 'version unknown'}; {cr.subgraphs} Edge TPU subgraph(s)",
            f"- operations: {cr.operations_on_tpu} of {cr.operations_total} on the Edge TPU "
            f"({cr.tpu_fraction:.1%}), {cr.operations_on_cpu} on the CPU",
            f"- parameter memory: {_kib(cr.on_chip_memory_bytes)} on-chip, "
            f"{_kib(cr.off_chip_memory_bytes)} streamed off-chip",
            f"- Edge TPU model size: {_kib(inputs.edgetpu_size_bytes)}",
        ]
        if cr.cpu_operations:
            lines += ["", "| operator on CPU | count | reason |", "|---|---|---|"]
            lines += [f"| {op.operator} | {op.count} | {op.reason} |" for op in cr.cpu_operations]
        lines.append("")
    lines += ["## Model and data", "", f"- model: {c.model_description}"]
    if c.training_cached:
        lines.append("  - training reused from the task cache")
    if c.dataset_source is None:
        lines.append(f"- dataset: none ({_labels_line(c.labels)})")
    else:
        lines += [
            f"- dataset: {c.dataset_source} ({_labels_line(c.labels)})",
            f"- {c.train_count} training / {c.eval_count} held-out images; "
            f"{c.skipped_count} unreadable image(s) skipped",
        ]
    lines += [f"  - skipped: `{path}`: {reason}" for path, reason in c.skipped_images]
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


def per_class_table(evaluation: Evaluation, has_float: bool = True) -> list[dict[str, object]]:
    """Rows of the per-class accuracy artifact (classes with held-out images; no float column for a brought
    int8 model)."""
    rows = []
    for row in evaluation.per_class:
        if not row.samples:
            continue
        cells: dict[str, object] = {"class": row.label, "held-out images": row.samples}
        if has_float:
            cells["float accuracy"] = round(row.float_accuracy, 4)
        cells["int8 accuracy"] = round(row.int8_accuracy, 4)
        rows.append(cells)
    return rows
