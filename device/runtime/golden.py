"""Golden outputs: the smoke test a new model version passes before it is swapped in.

The release pipeline runs the CPU model on a few reference inputs, regenerated anywhere from a seed and the
input spec, and stores the raw first output in the manifest. A device reruns them on the variant it will
use: the CPU variant must match within `manifest.golden_tolerance` (raw units) with the same top-1; the
Edge TPU variant, whose arithmetic differs from the CPU's, must give the same top-1.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from edgefleet.device.runtime.engine import Engine
from edgefleet.kernel.contracts.manifest import GoldenOutput, Manifest, TensorSpec
from edgefleet.kernel.errors import ModelError

FLOAT_REFERENCE_RANGE = (-1.0, 1.0)  # the real input domain of the default pixel normalization


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
    goldens = []
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
    top1_only = engine.variant == "edgetpu"
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
            top1 = int(np.argmax(output))
            if top1 != golden.top1:
                return GoldenCheck(False, max_diff,
                                   f"seed {golden.seed}: top-1 is {top1}, golden {golden.top1}")
            if not top1_only and diff > manifest.golden_tolerance:
                return GoldenCheck(False, max_diff,
                                   f"seed {golden.seed}: max |diff| {diff:g} > tolerance "
                                   f"{manifest.golden_tolerance:g}")
    except ModelError as error:
        return GoldenCheck(False, float("inf"), f"model failed to run: {error.message}")
    what = "top-1 (edgetpu variant)" if top1_only else f"within {manifest.golden_tolerance:g} and top-1"
    return GoldenCheck(True, max_diff, f"{len(manifest.golden)} golden outputs match: {what}")
