"""The release gates and the release report: pure code, no Prefect."""

from __future__ import annotations

import pytest

from edgefleet.flows.release.evaluate import ClassAccuracy, Evaluation
from edgefleet.flows.release.params import GateParams, ReleaseParams
from edgefleet.flows.release.report import (
    CandidateSummary,
    ReportInputs,
    artifact_key,
    check_gates,
    failed,
    render_report,
)
from edgefleet.kernel.contracts.manifest import CompilerReport, CpuOperation


def _evaluation(float_acc: float, int8_acc: float) -> Evaluation:
    return Evaluation(
        float_acc, int8_acc, 0.9, (ClassAccuracy("a", 10, float_acc, int8_acc),), 10, 0.1, 4000, 1000
    )


def test_accuracy_drop_gate_says_by_how_much_and_what_to_try() -> None:
    gates = check_gates(
        _evaluation(0.95, 0.92),
        None,
        "compiler absent",
        GateParams(max_accuracy_drop_points=1.0),
        representative_samples=50,
    )
    failing = failed(gates)
    assert [g.name for g in failing] == ["max_accuracy_drop_points"]
    assert "3.00 points" in failing[0].detail and "2.00 points over" in failing[0].detail
    assert "representative_samples, now 50" in failing[0].advice
    tpu = gates[2]
    assert not tpu.checked and tpu.passed and "compiler absent" in tpu.detail


def test_tpu_fraction_gate_lists_the_cpu_operators() -> None:
    report = CompilerReport(
        operations_total=10,
        operations_on_tpu=7,
        operations_on_cpu=3,
        cpu_operations=(CpuOperation(operator="RESHAPE", count=3, reason="unsupported"),),
    )
    gates = check_gates(_evaluation(0.9, 0.9), report, None, GateParams(min_tpu_fraction=0.9), 10)
    (tpu,) = failed(gates)
    assert tpu.name == "min_tpu_fraction" and tpu.measured == pytest.approx(0.7)
    assert "20.0 points short" in tpu.detail and "RESHAPE x3: unsupported" in tpu.advice


def test_brought_model_without_dataset_checks_no_accuracy_gate() -> None:
    gates = check_gates(None, None, None, GateParams(min_int8_accuracy=0.9), 0, has_float=False, precompiled=True)
    assert all(g.passed and not g.checked for g in gates)
    assert "no dataset" in gates[0].detail and "brought compiled" in gates[2].detail
    evaluated = check_gates(_evaluation(0.5, 0.5), None, None, GateParams(min_int8_accuracy=0.9), 0, has_float=False)
    assert [g.name for g in failed(evaluated)] == ["min_int8_accuracy"]
    assert "no float model" in evaluated[0].detail


def test_report_says_plainly_when_there_is_no_edgetpu_model() -> None:
    params = ReleaseParams(model="shapes")
    evaluation = _evaluation(0.9, 0.9)
    gates = check_gates(
        evaluation, None, "edgetpu_compiler on this machine is not available", params.gates, 10
    )
    markdown = render_report(
        ReportInputs(
            params=params,
            version="1.0.0",
            candidate=CandidateSummary(
                "small_cnn from scratch", "demo", ("a", "b"), 8, 2, (("x/bad.jpg", "UnidentifiedImageError"),), False
            ),
            evaluation=evaluation,
            compiler=None,
            compile_skipped_reason="edgetpu_compiler on this machine is not available",
            edgetpu_size_bytes=None,
            gates=gates,
            published=True,
            outcome="Version 1.0.0 published.",
            version_uri="/r/models/shapes/1.0.0",
            channel_uri=None,
            signing_key="key file k",
        )
    )
    assert "No Edge TPU model in this release: edgetpu_compiler on this machine is not available" in markdown
    assert "1 unreadable image(s) skipped" in markdown and "x/bad.jpg" in markdown
    assert "PUBLISHED" in markdown


def test_artifact_keys_are_valid_and_stable() -> None:
    assert artifact_key("my_model.v2", "report") == "release-my-model-v2-report"
    assert artifact_key("shapes", "per-class-accuracy") == "release-shapes-per-class-accuracy"
