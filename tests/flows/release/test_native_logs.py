"""TensorFlow's native log lines are told from the rest (pure), and routed away from stderr (a real child
process writing to the inherited file descriptor 2, as TensorFlow's C++ does)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgefleet.flows.release.native_logs import native_line, native_logs_to

# Seen in `make demo` and `edgefleet release` with TensorFlow 2.21 and ai-edge-litert 2.3.
NATIVE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796634595.769354   13980 port.cc:153] oneDNN custom operations are on.",
    "E0000 00:00:1796634695.145552   29034 node_def_util.cc:682] NodeDef mentions attribute use_unbounded_threadpool",
    "W0000 00:00:1712267574.801377  681831 tf_tfl_flatbuffer_helpers.cc:365] Ignored output_format.",
    "2025-09-17 14:44:05.157831: I external/local_xla/xla/tsl/cuda/cudart_stub.cc:32] Could not find cuda drivers",
    "fully_quantize: 0, inference_type: 6, input_inference_type: UINT8, output_inference_type: UINT8",
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
]
OTHERS = [
    "Traceback (most recent call last):",
    "09:12:42.146 | INFO    | Flow run 'release-floaty' - Beginning flow run",
    "release failed: /tmp/float.tflite is not fully integer-quantized",
    "fix: convert it with full-integer post-training quantization: converter.optimizations = [x]",
    "WARNING edgefleet.flows.release.compiler: edgetpu_compiler was not found",
    "INFO: a line of someone else's",
]


@pytest.mark.parametrize("line", NATIVE)
def test_tensorflow_native_lines_are_recognised(line: str) -> None:
    assert native_line(line.encode())


@pytest.mark.parametrize("line", OTHERS)
def test_every_other_line_is_left_alone(line: str) -> None:
    assert not native_line(line.encode())


def test_inside_native_lines_go_to_the_log_and_the_rest_to_stderr(tmp_path: Path, capfd) -> None:
    lines = [NATIVE[0], OTHERS[2], NATIVE[1], OTHERS[3]]
    script = "import sys\nfor line in sys.argv[1:]:\n    print(line, file=sys.stderr, flush=True)\n"
    log = tmp_path / "work" / "tensorflow.log"
    with native_logs_to(log):
        subprocess.run([sys.executable, "-c", script, *lines], check=True)
        # file descriptor 2, as sys.stderr is outside pytest (capfd swaps sys.stderr for a writer that bypasses
        # the descriptor, which raced the child's lines under load)
        os.write(2, b"from this process\n")

    assert log.read_text().splitlines() == [NATIVE[0], NATIVE[1]]
    assert capfd.readouterr().err.splitlines() == [OTHERS[2], OTHERS[3], "from this process"]
    sys.stderr.write("after\n")  # stderr is itself again
    assert capfd.readouterr().err == "after\n"
