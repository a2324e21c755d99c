"""The release's decisions, pure: which gates pass, whether it may publish, which channel to move, and what
the report and the result say. The `release-model` flow body calls these between its tasks; each has unit
tests of its own (tests/flows/release/test_decisions.py) and none does I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from pydantic import BaseModel, ConfigDict

from edgefleet.flows.release.params import ReleaseParams
from edgefleet.flows.release.report import (
    GateResult,
    ReportInputs,
    check_gates,
    failed,
    per_class_table,
    render_report,
)
from edgefleet.kernel.contracts.manifest import CompilerReport, Metrics, Origin
from edgefleet.kernel.errors import EdgefleetError

if TYPE_CHECKING:
    from edgefleet.flows.release.candidate import Candidate
    from edgefleet.flows.release.version_tasks import BuiltVersion, PublishOutcome, ReleasePlan

NOT_SIGNED = "not signed"


class GateFailed(EdgefleetError):
    """A release did not meet a gate; nothing was published."""


class ReleaseResult(BaseModel):
    """What a release did (the flow's return value)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    version: str
    published: bool
    created: bool
    registry: str
    version_uri: str | None
    channel: str | None
    channel_uri: str | None
    manifest_sha256: str | None
    variants: tuple[str, ...]
    metrics: Metrics
    compiler: CompilerReport | None
    compile_skipped_reason: str | None
    gates: tuple[GateResult, ...]
    skipped_images: int
    signing_key: str
    training_cached: bool
    stage_seconds: dict[str, float]
    report: str
    task: str = "classification"
    origin: Origin | None = None


class ChannelMove(NamedTuple):
    """A channel to point at the new version by compare-and-swap (`expected_version`: what it named at plan)."""

    model: str
    version: str
    channel: str
    expected_version: str | None
    by: str


def gates_of(candidate: Candidate, params: ReleaseParams) -> tuple[GateResult, ...]:
    """Every gate's verdict on the candidate, in report order."""
    return check_gates(
        candidate.evaluation,
        candidate.compiled.report,
        candidate.compiled.skipped_reason,
        params.gates,
        candidate.representative_samples,
        has_float=candidate.has_float,
        precompiled=candidate.precompiled,
    )


def gate_refusal(model: str, version: str, gates: tuple[GateResult, ...]) -> GateFailed | None:
    """The error that stops the release when a gate failed (naming each and what to try); None: publish."""
    failing = failed(gates)
    if not failing:
        return None
    return GateFailed(
        f"release of {model} {version} stopped by a gate: " + "; ".join(f"{g.name}: {g.detail}" for g in failing),
        "; ".join(f"{g.name}: {g.advice}" for g in failing),
    )


def refused_outcome(gates: tuple[GateResult, ...]) -> str:
    """The report's outcome line of a release a gate stopped."""
    return (
        "Gate(s) failed: "
        + "; ".join(f"{g.name}: {g.detail}" for g in failed(gates))
        + ". Nothing was written to the registry."
    )


def channel_move(params: ReleaseParams, plan: ReleasePlan, by: str) -> ChannelMove | None:
    """The channel to move once the version is published; None when the release only publishes."""
    if not params.channel:
        return None
    return ChannelMove(params.model, plan.version, params.channel, plan.channel_version_before, by)


def channel_refused_outcome(version: str, channel: str, error: EdgefleetError) -> str:
    """The report's outcome line when the version was published but the channel move was refused."""
    return f"Version {version} was published, but channel {channel} was NOT moved: {error.message}"


def published_outcome(
    version: str, channel: str | None, existing: bool, compile_skipped_reason: str | None, evaluated: bool
) -> str:
    """The report's outcome line of a published release."""
    what = "published" if not existing else "already published with identical files (no upload)"
    outcome = f"Version {version} {what}" + (
        f"; channel {channel} points at it." if channel else "; no channel moved."
    )
    if compile_skipped_reason:
        outcome += f" CPU model only: {compile_skipped_reason}."
    if not evaluated:
        outcome += " Released without evaluation (no dataset): no accuracy gates were checked."
    return outcome


def report_of(
    params: ReleaseParams,
    version: str,
    candidate: Candidate,
    gates: tuple[GateResult, ...],
    outcome: str,
    *,
    published: bool = False,
    version_uri: str | None = None,
    channel_uri: str | None = None,
    signing_key: str = NOT_SIGNED,
) -> str:
    """The markdown release report of this candidate and outcome."""
    compiled = candidate.compiled
    return render_report(
        ReportInputs(
            params=params,
            version=version,
            candidate=candidate.summary,
            evaluation=candidate.evaluation,
            compiler=compiled.report,
            compile_skipped_reason=compiled.skipped_reason,
            edgetpu_size_bytes=len(compiled.edgetpu_tflite) if compiled.edgetpu_tflite else None,
            gates=gates,
            published=published,
            outcome=outcome,
            version_uri=version_uri,
            channel_uri=channel_uri,
            signing_key=signing_key,
        )
    )


def per_class_rows(candidate: Candidate) -> list[dict[str, object]] | None:
    """The per-class accuracy artifact's rows; None when the candidate was not evaluated."""
    if candidate.evaluation is None:
        return None
    return per_class_table(candidate.evaluation, candidate.has_float)


def release_result(
    params: ReleaseParams,
    plan: ReleasePlan,
    candidate: Candidate,
    gates: tuple[GateResult, ...],
    built: BuiltVersion,
    published: PublishOutcome,
    channel_uri: str | None,
    stage_seconds: dict[str, float],
    report: str,
) -> ReleaseResult:
    """The flow's return value for a published release."""
    return ReleaseResult(
        model=params.model,
        version=plan.version,
        published=True,
        created=not published.existing,
        registry=plan.registry_uri,
        version_uri=plan.version_uri,
        channel=params.channel,
        channel_uri=channel_uri,
        manifest_sha256=published.result.manifest_sha256,
        variants=tuple(sorted(built.manifest.variants)),
        metrics=candidate.metrics,
        compiler=candidate.compiled.report,
        compile_skipped_reason=candidate.compiled.skipped_reason,
        gates=gates,
        skipped_images=candidate.summary.skipped_count,
        signing_key=built.signing_key,
        training_cached=candidate.summary.training_cached,
        stage_seconds=stage_seconds,
        report=report,
        task=candidate.task,
        origin=candidate.origin,
    )
