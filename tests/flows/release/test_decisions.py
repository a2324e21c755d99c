"""The release flow's decisions (pure): which gates pass, whether to publish, which channel moves, what the
report and the result say. No Prefect, no registry: candidates are built by hand."""

from __future__ import annotations

import pytest

from edgefleet.flows.registry import PublishResult
from edgefleet.flows.release.candidate import Candidate
from edgefleet.flows.release.compiler import CompileOutcome
from edgefleet.flows.release.decisions import (
    GateFailed,
    channel_move,
    channel_refused_outcome,
    gate_refusal,
    gates_of,
    per_class_rows,
    published_outcome,
    refused_outcome,
    release_result,
    report_of,
)
from edgefleet.flows.release.evaluate import ClassAccuracy, Evaluation
from edgefleet.flows.release.params import GateParams, ReleaseParams
from edgefleet.flows.release.report import CandidateSummary, gate_findings
from edgefleet.flows.release.version_tasks import BuiltVersion, PublishOutcome, ReleasePlan
from edgefleet.kernel.contracts.manifest import CompilerReport, Manifest, Metrics, Origin, TensorSpec
from edgefleet.kernel.errors import ConflictError
from edgefleet.kernel.findings import Status, findings_markdown

REPORT = CompilerReport(operations_total=10, operations_on_tpu=10, operations_on_cpu=0)
PLAN = ReleasePlan("/registry", "1.0.3", "1.0.2", "/registry/models/birds/1.0.3",
                   "/registry/models/birds/channels/canary.json")


def _candidate(
    float_acc: float = 0.9, int8_acc: float = 0.9, *, evaluated: bool = True, compiled: bool = True
) -> Candidate:
    evaluation = (
        Evaluation(float_acc, int8_acc, 0.95, (ClassAccuracy("a", 10, float_acc, int8_acc),
                                               ClassAccuracy("b", 0, 0.0, 0.0)), 10, 0.5, 4000, 1000)
        if evaluated else None
    )
    outcome = (
        CompileOutcome(b"edgetpu", REPORT, None) if compiled else CompileOutcome(None, None, "no compiler here")
    )
    return Candidate(
        summary=CandidateSummary("small_cnn", "demo", ("a", "b"), 80, 20, (("x.jpg", "broken"),), True),
        origin=Origin(kind="trained", dataset="demo"),
        task="classification",
        labels_text="a\nb\n",
        cpu_tflite=b"cpu",
        compiled=outcome,
        evaluation=evaluation,
        metrics=Metrics(int8_accuracy=int8_acc),
        representative_samples=100,
        has_float=True,
        precompiled=False,
    )


def _params(**fields: object) -> ReleaseParams:
    return ReleaseParams(model="birds", **fields)


def test_a_candidate_within_every_gate_is_published() -> None:
    gates = gates_of(_candidate(), _params())
    assert [g.name for g in gates] == ["max_accuracy_drop_points", "min_int8_accuracy", "min_tpu_fraction"]
    assert all(g.passed and g.checked for g in gates)
    assert gate_refusal("birds", "1.0.3", gates) is None


def test_a_failed_gate_refuses_the_release_naming_it_and_what_to_try() -> None:
    gates = gates_of(_candidate(0.9, 0.7), _params(gates=GateParams(max_accuracy_drop_points=1.0)))
    refusal = gate_refusal("birds", "1.0.3", gates)
    assert isinstance(refusal, GateFailed)
    assert refusal.message.startswith("release of birds 1.0.3 stopped by a gate: max_accuracy_drop_points:")
    assert "min_int8_accuracy" not in refusal.message  # that gate passed (minimum 0)
    assert "quantization.representative_samples" in refusal.fix
    outcome = refused_outcome(gates)
    assert outcome.startswith("Gate(s) failed: max_accuracy_drop_points: ")
    assert outcome.endswith("Nothing was written to the registry.")


def test_without_a_dataset_or_a_compiler_no_gate_is_checked_and_it_publishes() -> None:
    gates = gates_of(_candidate(evaluated=False, compiled=False), _params())
    assert not any(g.checked for g in gates)
    assert gate_refusal("birds", "1.0.3", gates) is None
    assert per_class_rows(_candidate(evaluated=False)) is None


def test_per_class_rows_leave_out_classes_without_held_out_images() -> None:
    assert [row["class"] for row in per_class_rows(_candidate()) or []] == ["a"]


def test_the_channel_moves_by_compare_and_swap_from_what_the_plan_read() -> None:
    move = channel_move(_params(channel="canary"), PLAN, "release-model run-1")
    assert move is not None
    assert (move.model, move.version, move.channel, move.expected_version, move.by) == (
        "birds", "1.0.3", "canary", "1.0.2", "release-model run-1")
    assert channel_move(_params(channel=None), PLAN, "by") is None
    assert channel_move(_params(channel=""), PLAN, "by") is None  # an empty form field: publish only


@pytest.mark.parametrize(
    ("channel", "existing", "skipped", "evaluated", "expected"),
    [
        ("canary", False, None, True, "Version 1.0.3 published; channel canary points at it."),
        (None, False, None, True, "Version 1.0.3 published; no channel moved."),
        ("stable", True, None, True,
         "Version 1.0.3 already published with identical files (no upload); channel stable points at it."),
        (None, False, "no compiler", False,
         "Version 1.0.3 published; no channel moved. CPU model only: no compiler. Released without evaluation "
         "(no dataset): no accuracy gates were checked."),
    ],
)
def test_the_outcome_line_says_what_was_published_and_what_was_not(
    channel: str | None, existing: bool, skipped: str | None, evaluated: bool, expected: str
) -> None:
    assert published_outcome("1.0.3", channel, existing, skipped, evaluated) == expected


def test_a_refused_channel_move_is_reported_with_its_cause() -> None:
    error = ConflictError("channel canary moved to 1.0.9 meanwhile", "release again")
    assert channel_refused_outcome("1.0.3", "canary", error) == (
        "Version 1.0.3 was published, but channel canary was NOT moved: channel canary moved to 1.0.9 meanwhile")


def test_gates_are_findings_and_the_report_prints_them_as_every_check_is_printed() -> None:
    gates = gates_of(_candidate(0.9, 0.7, compiled=False), _params(gates=GateParams(max_accuracy_drop_points=1.0)))
    findings = gate_findings(gates)
    assert [(f.name, f.status) for f in findings] == [
        ("max_accuracy_drop_points", Status.FAIL), ("min_int8_accuracy", Status.OK), ("min_tpu_fraction", Status.SKIP)]
    drop = findings[0]
    assert (drop.detail, drop.fix) == (gates[0].detail, gates[0].advice) and "representative_samples" in drop.fix
    assert findings[1].fix is None and "not checked: no Edge TPU model" in findings[2].detail
    markdown = report_of(_params(), "1.0.3", _candidate(0.9, 0.7, compiled=False), gates, refused_outcome(gates))
    table = "\n".join(findings_markdown(findings))
    assert f"## Gates\n\n{table}\n" in markdown and "| max_accuracy_drop_points | **FAIL** |" in table


def test_the_report_of_a_refused_release_is_unsigned_and_unpublished() -> None:
    gates = gates_of(_candidate(0.9, 0.5), _params())
    markdown = report_of(_params(), "1.0.3", _candidate(0.9, 0.5), gates, refused_outcome(gates))
    assert markdown.startswith("# Release birds 1.0.3: NOT PUBLISHED")
    assert "manifest signed with not signed" in markdown and "- version: not published" in markdown
    assert "Edge TPU model size: 0.0 KiB" in markdown  # the 7-byte stand-in


def test_the_report_of_a_published_release_names_where_it_went() -> None:
    gates = gates_of(_candidate(), _params())
    markdown = report_of(_params(), "1.0.3", _candidate(), gates, "ok", published=True,
                         version_uri=PLAN.version_uri, channel_uri=PLAN.channel_uri, signing_key="key abc")
    assert markdown.startswith("# Release birds 1.0.3: PUBLISHED")
    assert f"- version: {PLAN.version_uri}" in markdown and f"- channel: {PLAN.channel_uri}" in markdown
    assert "manifest signed with key abc" in markdown


def test_the_result_carries_the_plan_the_candidate_and_the_upload() -> None:
    candidate = _candidate()
    gates = gates_of(candidate, _params())
    spec = TensorSpec(name="in", shape=(1, 2), dtype="uint8")
    manifest = Manifest(model="birds", version="1.0.3", files=(), variants={"cpu": "model_cpu.tflite",
                        "edgetpu": "model_edgetpu.tflite"}, input=spec, outputs=(spec,), labels_file=None)
    built = BuiltVersion("/tmp/build", manifest, "f" * 64, "key abc", None)
    upload = PublishOutcome(PublishResult("birds", "1.0.3", PLAN.version_uri, "e" * 64, True), existing=True)
    result = release_result(_params(), PLAN, candidate, gates, built, upload, PLAN.channel_uri, {"plan": 0.1},
                            "# report")
    assert result.published and not result.created  # it existed with identical files
    assert (result.version, result.registry, result.version_uri) == ("1.0.3", "/registry", PLAN.version_uri)
    assert result.manifest_sha256 == "e" * 64 and result.variants == ("cpu", "edgetpu")
    assert result.skipped_images == 1 and result.training_cached and result.signing_key == "key abc"
    assert result.compiler == REPORT and result.compile_skipped_reason is None
