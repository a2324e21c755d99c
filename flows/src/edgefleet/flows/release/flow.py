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

The body only orchestrates: each side effect is a task (`edgefleet.flows.release.candidate` makes the candidate,
`edgefleet.flows.release.version_tasks` publishes it), each decision a pure function
(`edgefleet.flows.release.decisions`). A release that fails a gate publishes nothing and fails with
`GateFailed` after writing its report.
"""

from __future__ import annotations

import functools
import logging
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.context import FlowRunContext

from edgefleet.flows.release import decisions, version_tasks
from edgefleet.flows.release.candidate import Candidate, brought_candidate, trained_candidate
from edgefleet.flows.release.decisions import GateFailed, ReleaseResult
from edgefleet.flows.release.params import ReleaseParams, expand
from edgefleet.flows.release.report import GateResult
from edgefleet.flows.release.version_tasks import BuiltVersion, PublishOutcome, ReleasePlan
from edgefleet.kernel.errors import EdgefleetError

__all__ = ["FLOW_NAME", "GateFailed", "ReleaseResult", "release_model"]

log = logging.getLogger(__name__)

FLOW_NAME = "release-model"


@contextmanager
def _stage(timings: dict[str, float], name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = round(time.perf_counter() - started, 3)


@contextmanager
def _build_dir(work_dir: Path, model: str, version: str) -> Iterator[Path]:
    """A fresh local directory to build the version in, removed afterwards (it is uploaded by then)."""
    path = work_dir / version_tasks.BUILDS_DIR / model / f"{version}-{uuid.uuid4().hex[:12]}"
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _run_id() -> str:
    context = FlowRunContext.get()
    if context is not None and context.flow_run is not None:
        return f"{context.flow_run.name} ({context.flow_run.id})"
    return uuid.uuid4().hex


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
    timings: dict[str, float] = {}
    work_dir = expand(params.work_dir)
    with _stage(timings, "plan"):
        plan = version_tasks.plan_release(params)
    stage = functools.partial(_stage, timings)  # the candidate builders time their own stages
    candidate: Candidate = (
        brought_candidate(params, stage) if params.brought else trained_candidate(params, stage, work_dir)
    )
    per_class = decisions.per_class_rows(candidate)
    gates = _gated(params, plan, candidate, per_class)
    built, published = _publish_version(params, plan, candidate, timings, work_dir)
    report = functools.partial(
        decisions.report_of, params, plan.version, candidate, gates,
        published=True, version_uri=plan.version_uri, signing_key=built.signing_key,
    )
    channel_uri = _move_channel(params, plan, report, per_class, timings)
    outcome = decisions.published_outcome(
        plan.version, params.channel, published.existing, candidate.compiled.skipped_reason,
        evaluated=candidate.evaluation is not None,
    )
    markdown = report(outcome, channel_uri=channel_uri)
    version_tasks.publish_report(params.model, markdown, per_class)
    get_run_logger().info("%s", outcome)
    return decisions.release_result(
        params, plan, candidate, gates, built, published, channel_uri, timings, markdown
    )


def _gated(
    params: ReleaseParams, plan: ReleasePlan, candidate: Candidate, per_class: list[dict[str, object]] | None
) -> tuple[GateResult, ...]:
    """The candidate's gate verdicts when it passes them all; a refused release writes its report and raises
    `GateFailed` (nothing published)."""
    gates = decisions.gates_of(candidate, params)
    refusal = decisions.gate_refusal(params.model, plan.version, gates)
    if refusal is not None:
        outcome = decisions.refused_outcome(gates)
        version_tasks.publish_report(
            params.model, decisions.report_of(params, plan.version, candidate, gates, outcome), per_class
        )
        raise refusal
    if candidate.compiled.skipped_reason:
        get_run_logger().warning(
            "No Edge TPU model in this release: %s. Shipping the CPU model only.", candidate.compiled.skipped_reason
        )
    return gates


def _publish_version(
    params: ReleaseParams, plan: ReleasePlan, candidate: Candidate, timings: dict[str, float], work_dir: Path
) -> tuple[BuiltVersion, PublishOutcome]:
    """Builds the version directory (golden outputs, manifest), signs it and publishes it to the registry."""
    evaluation = candidate.evaluation
    with _build_dir(work_dir, params.model, plan.version) as build_dir:
        with _stage(timings, "golden"):
            golden = version_tasks.golden_outputs(candidate.cpu_tflite, params.golden_seeds)
        with _stage(timings, "manifest"):
            directory, manifest = version_tasks.write_version(
                str(build_dir),
                params,
                plan.version,
                candidate.labels_text,
                candidate.cpu_tflite,
                candidate.compiled.edgetpu_tflite,
                candidate.metrics,
                candidate.compiled.report,
                golden,
                reference=evaluation.reference if evaluation is not None else None,
                calibration=evaluation.calibration if evaluation is not None else None,
                model_task=candidate.task,
                origin=candidate.origin,
            )
        with _stage(timings, "sign"):
            built = version_tasks.sign_version(directory, manifest, params.signing, plan.registry_uri)
        with _stage(timings, "publish"):
            published = version_tasks.publish(plan.registry_uri, built)
    return built, published


def _move_channel(
    params: ReleaseParams, plan: ReleasePlan, report: Callable[..., str], per_class: list[dict[str, object]] | None,
    timings: dict[str, float],
) -> str | None:
    """Moves the release's channel to the published version when the release names one (`decisions.channel_move`);
    returns the channel's URI (None: no channel). A refused move writes the report and raises."""
    move = decisions.channel_move(params, plan, f"{FLOW_NAME} {_run_id()}")
    if move is None:
        return None
    with _stage(timings, "channel"):
        try:
            version_tasks.move_channel(
                plan.registry_uri, move.model, move.version, move.channel, move.expected_version, move.by,
                params.signing,
            )
        except EdgefleetError as error:
            outcome = decisions.channel_refused_outcome(plan.version, move.channel, error)
            version_tasks.publish_report(params.model, report(outcome), per_class)
            raise
    return plan.channel_uri
