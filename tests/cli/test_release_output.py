"""What `edgefleet release` shows (issue 22, first-run output): a refused release is its message and fix, whole
and once (no Prefect traceback before it, no `[...]` eaten as Rich markup), and TensorFlow's native log lines
go to the work directory's tensorflow.log instead of the terminal. The CLI runs as a user runs it: a process
of its own, against the tests' Prefect API."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edgefleet.flows.release.native_logs import native_line

pytestmark = pytest.mark.usefixtures("prefect_api")

EDGEFLEET = Path(sys.executable).with_name("edgefleet")
CLI_TIMEOUT_S = 600


def _run_release(config: Path) -> subprocess.CompletedProcess[str]:
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "COLUMNS": "80"}
    return subprocess.run([str(EDGEFLEET), "release", "--config", str(config)], capture_output=True, text=True,
                          timeout=CLI_TIMEOUT_S, env=env)


def test_a_float_model_is_refused_with_its_message_and_fix_whole_and_once(
    make_params, tiny_float: bytes, tmp_path: Path
) -> None:
    model = tmp_path / "float.tflite"
    model.write_bytes(tiny_float)
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\n")
    params = make_params(model="floaty", source={"kind": "tflite", "path": str(model), "labels": str(labels)},
                         dataset=None, work_dir=str(tmp_path / "work"))
    config = tmp_path / "release.yaml"
    config.write_text(yaml.safe_dump(params.model_dump(mode="json")))

    result = _run_release(config)

    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output, output  # Prefect's account of the failed task and flow runs: held back
    assert output.count("not fully integer-quantized") == 1, output
    fix = next(line for line in result.stderr.splitlines() if line.startswith("fix: "))
    assert "converter.optimizations = [tf.lite.Optimize.DEFAULT], a representative_dataset" in fix, fix
    assert "target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]" in fix, fix
    assert [line for line in output.splitlines() if native_line(line.encode())] == [], output
    assert (tmp_path / "work" / "tensorflow.log").read_text().strip()  # where they went instead
