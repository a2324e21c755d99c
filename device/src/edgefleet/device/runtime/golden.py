"""Golden outputs: the smoke test a new model version passes before it is swapped in.

The release pipeline runs the CPU model on a few reference inputs, regenerated anywhere from a seed and the
input spec, and stores the raw first output in the manifest. A device reruns them on the variant it will
use: the CPU variant must match within `manifest.golden_tolerance` (raw units) with the same top-1.

The Edge TPU variant's arithmetic differs from the CPU's: Coral promises no bit-exactness (TFLite's quantization
spec: hardware implementations "are not bit-exact"), and its outputs are a few raw units off, so on a near-tie
its top-1 can differ (mobilenet_v2's top-1 margin on the reference inputs is 2-4 raw units of 256). It passes
when, on every reference input, the golden top-1 is among its top `EDGETPU_TOP_K` (the criterion of Coral's own
tests of a CPU model and its Edge TPU compilation) and within `EDGETPU_TOP1_SLACK_RAW` raw units of its top
value: a rounding's near-tie passes, a really different answer does not.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from edgefleet.device.runtime.engine import Engine
from edgefleet.kernel.contracts.manifest import GoldenOutput, Manifest, TensorSpec
from edgefleet.kernel.errors import ModelError

FLOAT_REFERENCE_RANGE = (-1.0, 1.0)  # the real input domain of the default pixel normalization
# Coral's tests of a CPU model and its Edge TPU compilation (libcoral: coral/classification/model_test_cases.bzl,
# `_CPU_EDGETPU_MODEL_PAIR_CASES`, run by coral/classification/BUILD with `ARG_K` default 3) ask of both the
# same thing: the expected label among the top 3 (with the same score threshold), never equal outputs.
EDGETPU_TOP_K = 3
# How far (raw output units, quantized outputs) the golden top-1 may sit below the Edge TPU output's top value.
# Coral documents no number for this: it is the measured top-1 margin of mobilenet_v2_1.0_224_quant on the
# reference inputs (2-4 units of 256), so a one-step rounding difference at the logits (which moves that
# model's outputs by up to 2 units; tests/tpu_arithmetic.py) cannot refuse a good release.
EDGETPU_TOP1_SLACK_RAW = 4.0


@dataclass(frozen=True)
class GoldenCheck:
    """Outcome of `check_golden`.

    Attributes:
        passed: Every golden output matched.
        max_diff: Largest |raw output - golden| over all reference inputs (inf on shape mismatch or error).
        detail: Human-readable summary naming the first failure.
    """

    passed: bool
    max_diff: float
    detail: str


def reference_input(spec: TensorSpec, seed: int) -> np.ndarray:
    """A deterministic input tensor for `spec`: uniform over the integer dtype's range, or over [-1, 1).

    Depends only on the shape, dtype and seed (numpy's default_rng, PCG64: stable across platforms).
    """
    rng = np.random.default_rng(seed)
    dtype = np.dtype(spec.dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=spec.shape, dtype=dtype, endpoint=True)
    low, high = FLOAT_REFERENCE_RANGE
    return rng.uniform(low, high, size=spec.shape).astype(dtype)


def _first_output(engine: Engine, seed: int) -> np.ndarray:
    return engine.run_raw(reference_input(engine.info.input, seed))[0].ravel()


def compute_golden(engine: Engine, seeds: Iterable[int]) -> tuple[GoldenOutput, ...]:
    """Runs the reference inputs of `seeds` (on the CPU model, for a release) and records the first output.

    Raises:
        ModelError: The model fails to run.
    """
    goldens: list[GoldenOutput] = []
    for seed in seeds:
        output = _first_output(engine, seed)
        goldens.append(GoldenOutput(seed=seed, output=tuple(float(v) for v in output),
                                    top1=int(np.argmax(output))))
    return tuple(goldens)


def check_golden(engine: Engine, manifest: Manifest) -> GoldenCheck:
    """Reruns the manifest's golden outputs on `engine` (never raises for a model that misbehaves).

    With no golden outputs in the manifest, the check still runs one reference input (the model must run).
    """
    spec, want = engine.info.input, manifest.input
    if spec.shape != want.shape or spec.dtype != want.dtype:
        return GoldenCheck(False, float("inf"),
                           f"model input {spec.shape} {spec.dtype} differs from the manifest's "
                           f"{want.shape} {want.dtype}")
    edgetpu = engine.variant == "edgetpu"
    slack = edgetpu_slack(engine.info.outputs[0].dtype, manifest.golden_tolerance)
    max_diff = 0.0
    try:
        if not manifest.golden:
            _first_output(engine, 0)
            return GoldenCheck(True, 0.0, "manifest has no golden outputs; the model ran a reference input")
        for golden in manifest.golden:
            output = _first_output(engine, golden.seed)
            if output.size != len(golden.output):
                return GoldenCheck(False, float("inf"),
                                   f"seed {golden.seed}: output has {output.size} values, golden "
                                   f"{len(golden.output)}")
            diff = float(np.max(np.abs(output.astype(np.float64) - np.asarray(golden.output))))
            max_diff = max(max_diff, diff)
            failure = (edgetpu_failure(output, golden.top1, slack) if edgetpu
                       else cpu_failure(output, golden.top1, diff, manifest.golden_tolerance))
            if failure:
                return GoldenCheck(False, max_diff, f"seed {golden.seed}: {failure}")
    except ModelError as error:
        return GoldenCheck(False, float("inf"), f"model failed to run: {error.message}")
    what = (f"golden top-1 in the top {EDGETPU_TOP_K} and within {slack:g} of the top (edgetpu variant)" if edgetpu
            else f"within {manifest.golden_tolerance:g} and top-1")
    return GoldenCheck(True, max_diff, f"{len(manifest.golden)} golden outputs match: {what}")


def edgetpu_slack(output_dtype: str, golden_tolerance: float) -> float:
    """How far below the top the golden top-1 may be on the Edge TPU: `EDGETPU_TOP1_SLACK_RAW` for quantized
    outputs (or the release's own tolerance when larger); for float outputs, the release's tolerance."""
    if np.issubdtype(np.dtype(output_dtype), np.integer):
        return max(EDGETPU_TOP1_SLACK_RAW, golden_tolerance)
    return golden_tolerance


def cpu_failure(output: np.ndarray, golden_top1: int, diff: float, tolerance: float) -> str | None:
    """The CPU variant: the same top-1 and every value within `tolerance`; None when it passes."""
    top1 = int(np.argmax(output))
    if top1 != golden_top1:
        return f"top-1 is {top1}, golden {golden_top1}"
    if diff > tolerance:
        return f"max |diff| {diff:g} > tolerance {tolerance:g}"
    return None


def edgetpu_failure(output: np.ndarray, golden_top1: int, slack: float) -> str | None:
    """The Edge TPU variant: the golden top-1 among its top `EDGETPU_TOP_K` and within `slack` of its top."""
    values = output.astype(np.float64)
    top1 = int(np.argmax(values))
    if golden_top1 == top1:
        return None
    rank = int(np.sum(values > values[golden_top1]))  # values above the golden top-1's
    below = float(values[top1] - values[golden_top1])
    if rank >= EDGETPU_TOP_K or below > slack:
        return (f"top-1 is {top1}, golden {golden_top1}, which is {below:g} below it (rank {rank + 1}); the "
                f"Edge TPU's rounding allows the top {EDGETPU_TOP_K} within {slack:g}")
    return None
