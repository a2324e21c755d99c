"""The golden smoke test meets Edge TPU arithmetic (issue 22): the stand-in "TPU" runs a model whose outputs
are a few raw units off the CPU's (tests/tpu_arithmetic.py), as a real TPU's rounding is. A good release
still passes; a really different output still fails."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from tpu_arithmetic import tpu_rounded

from edgefleet.device.runtime.config import RuntimeConfig
from edgefleet.device.runtime.engine import Engine, open_for_manifest
from edgefleet.device.runtime.golden import (
    EDGETPU_TOP1_SLACK_RAW,
    EDGETPU_TOP_K,
    check_golden,
    compute_golden,
    edgetpu_failure,
    edgetpu_slack,
    reference_input,
)
from edgefleet.device.runtime.interpreter import inspect_model
from edgefleet.kernel.contracts.manifest import FileEntry, Manifest

MOBILENET_V2 = "mobilenet_v2_1.0_224_quant.tflite"
SEEDS = (0, 1, 2, 3)
# The stand-in's rounding: every logit moved by up to one quantization step. Its pattern 7 changes the top-1 of
# one reference input of mobilenet_v2 (a near-tie), as a TPU can; a top-1-only check refused that good release.
ONE_STEP, NEAR_TIE_PATTERN = 1.0, 7
# A really different model: logits moved by up to 16 steps (the golden top-1 falls tens of raw units behind).
SIXTEEN_STEPS, DIFFERENT_PATTERN = 16.0, 1


def test_a_near_tie_within_the_slack_passes_and_a_different_answer_fails():
    output = np.array([10, 40, 38, 37, 5, 36], dtype=np.uint8)
    assert edgetpu_failure(output, 1, EDGETPU_TOP1_SLACK_RAW) is None  # the same top-1
    assert edgetpu_failure(output, 2, EDGETPU_TOP1_SLACK_RAW) is None  # 2 below: a rounding's near-tie
    assert edgetpu_failure(output, 3, EDGETPU_TOP1_SLACK_RAW) is None  # 3 below, rank 3 (Coral's top 3)
    assert "rank 4" in edgetpu_failure(output, 5, EDGETPU_TOP1_SLACK_RAW)  # within 4 but not in the top 3
    assert "30 below" in edgetpu_failure(output, 0, EDGETPU_TOP1_SLACK_RAW)
    assert EDGETPU_TOP_K == 3
    assert edgetpu_slack("uint8", 2.0) == EDGETPU_TOP1_SLACK_RAW and edgetpu_slack("int8", 9.0) == 9.0
    assert edgetpu_slack("float32", 0.01) == 0.01  # float outputs: the release's own tolerance


def _release(directory: Path, cpu: Path, edgetpu: Path) -> Manifest:
    """A release as the pipeline makes it: golden outputs from the CPU model; `edgetpu` as its Edge TPU variant."""
    with Engine.open(cpu) as engine:
        golden = compute_golden(engine, SEEDS)
    files = []
    for name, path in (("model_cpu.tflite", cpu), ("model_edgetpu.tflite", edgetpu)):
        os.symlink(path, directory / name)
        info = inspect_model(path)
        files.append(FileEntry(name=name, sha256=info.sha256, size=info.size))
    info = inspect_model(cpu)
    return Manifest(model="mnv2", version="1.0.0", labels_file=None, files=tuple(files),
                    variants={"cpu": "model_cpu.tflite", "edgetpu": "model_edgetpu.tflite"},
                    input=info.input, outputs=info.outputs, golden=golden)


def _on_the_standin_tpu(tmp_path: Path, coral_data: Path, library: str, steps: float, pattern: int):
    version = tmp_path / "version"
    version.mkdir()
    rounded = tpu_rounded(coral_data / MOBILENET_V2, tmp_path / "rounded.tflite", logit_steps=steps, seed=pattern)
    manifest = _release(version, coral_data / MOBILENET_V2, rounded)
    with open_for_manifest(version, manifest, device="auto",
                           config=RuntimeConfig(edgetpu_library=library)) as engine:
        assert (engine.variant, engine.backend) == ("edgetpu", "edgetpu")
        outputs = [engine.run_raw(reference_input(engine.info.input, g.seed))[0].ravel() for g in manifest.golden]
        return check_golden(engine, manifest), manifest, outputs


def test_a_good_release_passes_on_tpu_arithmetic_though_a_top1_moved(standin_library, tpu, coral_data, tmp_path):
    check, manifest, outputs = _on_the_standin_tpu(tmp_path, coral_data, standin_library, ONE_STEP,
                                                   NEAR_TIE_PATTERN)
    moved = [g.seed for g, out in zip(manifest.golden, outputs) if int(np.argmax(out)) != g.top1]
    assert moved, "the stand-in's rounding should move a near-tie top-1 (what refused good releases)"
    assert 0 < check.max_diff <= EDGETPU_TOP1_SLACK_RAW  # a few raw units off, as a TPU is
    assert check.passed, check.detail


def test_a_really_different_output_still_fails_on_the_tpu(standin_library, tpu, coral_data, tmp_path):
    check, _, _ = _on_the_standin_tpu(tmp_path, coral_data, standin_library, SIXTEEN_STEPS, DIFFERENT_PATTERN)
    assert not check.passed and "Edge TPU's rounding allows the top 3" in check.detail
