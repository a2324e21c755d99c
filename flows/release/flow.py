"""The `release-model` Prefect flow: train -> quantize -> evaluate -> compile -> gate -> sign -> publish.

A model brought as a `.tflite` (`source.kind: tflite`) skips training and quantization: it is checked (fully
integer, labels), compiled when no Edge TPU twin is given, evaluated when a dataset is given, then gated,
signed and published like a trained one.

Run it from the Prefect UI (deployment `release-model`, see prefect.yaml), from the CLI
(`edgefleet release --config release.yaml`), or from Python:

    from edgefleet.flows.release.flow import release_model
    from edgefleet.flows.release.params import ReleaseParams

    result = release_model(ReleaseParams(model="shapes"))
    print(result.version, result.version_uri)

The body only orchestrates; each side effect is a task (`edgefleet.flows.release.tasks`). A release that
fails a gate publishes nothing and fails with `GateFailed` after writing its report.
"""

from __future__ import annotations

import functools
import logging
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import FlowRunContext
from pydantic import BaseModel, ConfigDict

from edgefleet.flows.registry import open_registry_writer
from edgefleet.flows.release import report as report_module
from edgefleet.flows.release import tasks
from edgefleet.flows.release.candidate import Candidate, brought_candidate, trained_candidate
from edgefleet.flows.release.evaluate import Evaluation
from edgefleet.flows.release.params import ReleaseParams, expand
from edgefleet.kernel.contracts.layout import channel_key, version_prefix
from edgefleet.kernel.contracts.manifest import CompilerReport, Metrics, Origin
from edgefleet.kernel.errors import EdgefleetError

log = logging.getLogger(__name__)

FLOW_NAME = "release-model"


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
    gates: tuple[report_module.GateResult, ...]
    skipped_images: int
    signing_key: str
    training_cached: bool
    stage_seconds: dict[str, float]
    report: str
    task: str = "classification"
    origin: Origin | None = None


@contextmanager
def _stage(timings: dict[str, float], name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = round(time.perf_counter() - started, 3)


def _run_id() -> str:
    context = FlowRunContext.get()
    if context is not None and context.flow_run is not None:
        return f"{context.flow_run.name} ({context.flow_run.id})"
    return uuid.uuid4().hex


def _publish_artifacts(
    params: ReleaseParams, markdown: str, evaluation: Evaluation | None, has_float: bool = True
) -> None:
    create_markdown_artifact(
        markdown,
        key=report_module.artifact_key(params.model, "report"),
        description=f"Release report of model {params.model}",
    )
    if evaluation is not None:
        create_table_artifact(
            report_module.per_class_table(evaluation, has_float),
            key=report_module.artifact_key(params.model, "per-class-accuracy"),
            description=f"Held-out accuracy per class, float32 vs int8, of model {params.model}",
        )


@flow(name=FLOW_NAME, flow_run_name="release-{params.model}", validate_parameters=True, log_prints=False)
def release_model(params: ReleaseParams) -> ReleaseResult:
    """Releases a model: trains, loads or takes it, evaluates, compiles, gates, signs and publishes it.

    Args:
        params: The whole release description (rendered as a form in the Prefect UI).

    Returns:
        What was published where, with metrics, compiler report and gate verdicts.

    Raises:
        GateFailed: a gate was not met (nothing published; the report says why and what to try).
        EdgefleetError subclasses: bad dataset or model, compiler failure, registry refusal, channel conflict.
    """
    logger = get_run_logger()
    timings: dict[str, float] = {}
    work_dir = expand(params.work_dir)

    with _stage(timings, "plan"):
        plan = tasks.plan_release(params)
    stage = functools.partial(_stage, timings)  # the candidate builders time their own stages
    candidate: Candidate = (
        brought_candidate(params, stage) if params.brought else trained_candidate(params, stage, work_dir)
    )
    evaluation, compiled = candidate.evaluation, candidate.compiled
    gates = report_module.check_gates(
        evaluation,
        compiled.report,
        compiled.skipped_reason,
        params.gates,
        candidate.representative_samples,
        has_float=candidate.has_float,
        precompiled=candidate.precompiled,
    )
    metrics = candidate.metrics

    def render(
        published: bool, outcome: str, version_uri: str | None, channel_uri: str | None, signing_key: str
    ) -> str:
        return report_module.render_report(
            report_module.ReportInputs(
                params=params,
                version=plan.version,
                candidate=candidate.summary,
                evaluation=evaluation,
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

    failing = report_module.failed(gates)
    if failing:
        outcome = (
            "Gate(s) failed: "
            + "; ".join(f"{g.name}: {g.detail}" for g in failing)
            + ". Nothing was written to the registry."
        )
        _publish_artifacts(
            params, render(False, outcome, None, None, "not signed"), evaluation, candidate.has_float
        )
        raise GateFailed(
            f"release of {params.model} {plan.version} stopped by a gate: "
            + "; ".join(f"{g.name}: {g.detail}" for g in failing),
            "; ".join(f"{g.name}: {g.advice}" for g in failing),
        )
    if compiled.skipped_reason:
        logger.warning(
            "No Edge TPU model in this release: %s. Shipping the CPU model only.", compiled.skipped_reason
        )

    build_dir = work_dir / tasks.BUILDS_DIR / params.model / f"{plan.version}-{uuid.uuid4().hex[:12]}"
    try:
        with _stage(timings, "golden"):
            golden = tasks.golden_outputs(candidate.cpu_tflite, params.golden_seeds)
        with _stage(timings, "manifest"):
            directory, manifest = tasks.write_version(
                str(build_dir),
                params,
                plan.version,
                candidate.labels_text,
                candidate.cpu_tflite,
                compiled.edgetpu_tflite,
                metrics,
                compiled.report,
                golden,
                reference=evaluation.reference if evaluation is not None else None,
                model_task=candidate.task,
                origin=candidate.origin,
            )
        with _stage(timings, "sign"):
            built = tasks.sign_version(directory, manifest, params.signing, plan.registry_uri)
        with _stage(timings, "publish"):
            published = tasks.publish(plan.registry_uri, built)
    finally:
        shutil.rmtree(build_dir, ignore_errors=True)

    registry = open_registry_writer(plan.registry_uri)
    version_uri = registry.describe(version_prefix(params.model, plan.version))
    channel_uri = None
    if params.channel:
        with _stage(timings, "channel"):
            try:
                tasks.move_channel(
                    plan.registry_uri,
                    params.model,
                    plan.version,
                    params.channel,
                    plan.channel_version_before,
                    f"{FLOW_NAME} {_run_id()}",
                    params.signing,
                )
            except EdgefleetError as error:
                outcome = (
                    f"Version {plan.version} was published, but channel {params.channel} was NOT moved: "
                    f"{error.message}"
                )
                _publish_artifacts(
                    params,
                    render(True, outcome, version_uri, None, built.signing_key),
                    evaluation,
                    candidate.has_float,
                )
                raise
        channel_uri = registry.describe(channel_key(params.model, params.channel))

    what = "published" if not published.existing else "already published with identical files (no upload)"
    outcome = f"Version {plan.version} {what}" + (
        f"; channel {params.channel} points at it." if params.channel else "; no channel moved."
    )
    if compiled.skipped_reason:
        outcome += f" CPU model only: {compiled.skipped_reason}."
    if evaluation is None:
        outcome += " Released without evaluation (no dataset): no accuracy gates were checked."
    markdown = render(True, outcome, version_uri, channel_uri, built.signing_key)
    _publish_artifacts(params, markdown, evaluation, candidate.has_float)
    logger.info("%s", outcome)
    return ReleaseResult(
        model=params.model,
        version=plan.version,
        published=True,
        created=not published.existing,
        registry=plan.registry_uri,
        version_uri=version_uri,
        channel=params.channel,
        channel_uri=channel_uri,
        manifest_sha256=published.result.manifest_sha256,
        variants=tuple(sorted(built.manifest.variants)),
        metrics=metrics,
        compiler=compiled.report,
        compile_skipped_reason=compiled.skipped_reason,
        gates=gates,
        skipped_images=candidate.summary.skipped_count,
        signing_key=built.signing_key,
        training_cached=candidate.summary.training_cached,
        stage_seconds=timings,
        report=markdown,
        task=candidate.task,
        origin=candidate.origin,
    )
