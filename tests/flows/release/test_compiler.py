"""edgetpu_compiler: the parser on Google's published output, and the subprocess wrapper on the stand-in.

The compiler cannot be installed here; the wrapper runs `standin_edgetpu_compiler.py` (a test double that
follows the real command line and output format, see its docstring) as a real subprocess.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from edgefleet.flows.release.compile_params import CompileOff, CompileSsh
from edgefleet.flows.release.compiler import (
    CompileError,
    CompilerNotFound,
    LocalCompiler,
    SshCompiler,
    compile_model,
    compiler_host,
)
from edgefleet.flows.release.compiler_output import parse_compiler_output, parse_operation_table, parse_size

SAMPLES = Path(__file__).resolve().parents[4] / "shared" / "edgetpu-compiler"


@pytest.fixture(scope="module")
def samples() -> Path:
    if not SAMPLES.is_dir():
        pytest.skip(f"{SAMPLES} (published compiler output) is not here")
    return SAMPLES


def test_parse_size_units() -> None:
    assert parse_size("24.00", "KiB") == 24 * 1024
    assert parse_size("0.00", "B") == 0
    assert parse_size("6.63", "MiB") == round(6.63 * 1024 * 1024)


def test_parse_fully_mapped_model(samples: Path) -> None:
    report = parse_compiler_output((samples / "full-stdout.txt").read_text())
    assert report.compiler_version == "16.0.384591198"
    assert (report.operations_total, report.operations_on_tpu, report.operations_on_cpu) == (8, 8, 0)
    assert report.tpu_fraction == 1.0
    assert report.cpu_operations == ()
    assert report.subgraphs == 1
    assert report.on_chip_memory_bytes == 24 * 1024
    assert report.off_chip_memory_bytes == 0


def test_parse_partial_model_with_its_log(samples: Path) -> None:
    report = parse_compiler_output(
        (samples / "partial-stdout.txt").read_text(), (samples / "partial.log").read_text()
    )
    assert (report.operations_total, report.operations_on_tpu, report.operations_on_cpu) == (267, 264, 3)
    assert report.on_chip_memory_bytes == round(4.21 * 1024 * 1024)
    # The log's table lists mapped rows too; only the one not "Mapped to Edge TPU" is a CPU operation.
    assert [(op.operator, op.count, op.reason) for op in report.cpu_operations] == [
        ("CUSTOM", 1, "Operation is working on an unsupported data type")
    ]
    assert report.tpu_fraction == pytest.approx(264 / 267)


def test_parse_partial_stdout_without_log_still_counts(samples: Path) -> None:
    report = parse_compiler_output((samples / "partial-stdout.txt").read_text())
    assert report.operations_on_cpu == 3
    assert report.cpu_operations == ()


def test_parse_cpu_heavy_model_reasons_and_off_chip_memory(samples: Path) -> None:
    report = parse_compiler_output((samples / "cpu-heavy-stdout.txt").read_text())
    assert report.compiler_version is None  # this sample starts at "Input model:"
    assert (report.operations_total, report.operations_on_tpu, report.operations_on_cpu) == (141, 138, 3)
    assert report.off_chip_memory_bytes == round(6.63 * 1024 * 1024)
    assert [op.operator for op in report.cpu_operations] == ["RESHAPE", "CONCATENATION", "QUANTIZE"]
    assert all("not mapped" in op.reason for op in report.cpu_operations)


def test_operation_table_merges_rows_of_one_operator() -> None:
    text = (
        "Operator                       Count      Status\n\n"
        "LOGISTIC                       1          Mapped to Edge TPU\n"
        "LOGISTIC                       2          More than one subgraph is not supported\n"
        "LOGISTIC                       1          More than one subgraph is not supported\n"
    )
    rows = parse_operation_table(text)
    assert len(rows) == 3
    report = parse_compiler_output("Total number of operations: 4\n", text)
    assert [(op.operator, op.count) for op in report.cpu_operations] == [("LOGISTIC", 3)]
    assert (report.operations_on_tpu, report.operations_on_cpu) == (1, 3)


def test_output_without_totals_is_refused() -> None:
    with pytest.raises(CompileError, match="Total number of operations"):
        parse_compiler_output("Edge TPU Compiler version 16.0\nsomething else\n")


# --- the wrapper, on the stand-in executable ----------------------------------------------------------


def _op_count(tflite: bytes) -> int:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=tflite)
    return sum(1 for op in interpreter._get_ops_details() if op["op_name"] != "DELEGATE")


def test_compiles_with_the_standin_and_parses_its_report(standin_compiler: Path, tiny_int8: bytes) -> None:
    host = LocalCompiler(str(standin_compiler), timeout_s=60)
    outcome = compile_model(host, tiny_int8, "model.tflite")
    assert outcome.skipped_reason is None
    assert outcome.edgetpu_tflite == tiny_int8  # the stand-in copies (a real compiler adds edgetpu-custom-op)
    assert outcome.report.operations_total == _op_count(tiny_int8)
    assert outcome.report.operations_on_cpu == 0
    assert "Compilation succeeded" in outcome.stdout


def test_operators_left_on_cpu_are_reported(
    standin_compiler: Path, tiny_int8: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGETPU_STANDIN_CPU_OPS", "SOFTMAX")
    outcome = compile_model(LocalCompiler(str(standin_compiler), 60), tiny_int8, "model.tflite")
    assert outcome.report.operations_on_cpu == 1
    assert [op.operator for op in outcome.report.cpu_operations] == ["SOFTMAX"]
    assert outcome.report.tpu_fraction < 1.0


def test_compiler_exiting_non_zero_is_an_error_with_its_message(
    standin_compiler: Path, tiny_int8: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGETPU_STANDIN_FAIL", "1")
    with pytest.raises(CompileError, match="exit status 1") as caught:
        compile_model(LocalCompiler(str(standin_compiler), 60), tiny_int8, "model.tflite")
    assert "Compilation failed" in caught.value.message
    assert caught.value.fix


def test_float_model_is_refused_by_the_compiler(standin_compiler: Path, tiny_float: bytes) -> None:
    with pytest.raises(CompileError, match="Model not quantized"):
        compile_model(LocalCompiler(str(standin_compiler), 60), tiny_float, "model.tflite")


def test_absent_compiler_ships_cpu_only_or_fails_when_required(tmp_path: Path, tiny_int8: bytes) -> None:
    missing = str(tmp_path / "no-such-dir" / "edgetpu_compiler")
    outcome = compile_model(LocalCompiler(missing, 60), tiny_int8, "model.tflite")
    assert outcome.edgetpu_tflite is None and outcome.report is None
    assert missing in outcome.skipped_reason and "not found on this machine" in outcome.skipped_reason
    with pytest.raises(CompilerNotFound, match="edgetpu_compiler"):
        compile_model(LocalCompiler(missing, 60), tiny_int8, "model.tflite", require=True)


def test_compile_off_skips() -> None:
    outcome = compile_model(compiler_host(CompileOff()), b"unused", "model.tflite")
    assert outcome.skipped_reason and "off" in outcome.skipped_reason


def test_ssh_mode_needs_a_host() -> None:
    with pytest.raises(ValueError, match="compile.host"):
        CompileSsh()
    host = compiler_host(CompileSsh(host="builder.invalid", user="ci", port=2222))
    assert isinstance(host, SshCompiler)
    assert host.description == "edgetpu_compiler on ci@builder.invalid:2222"


def test_unreachable_compile_host_is_a_clear_error(tiny_int8: bytes, tmp_path: Path) -> None:
    from edgefleet.local.emulators import free_port

    port = free_port()  # nothing listens there
    (tmp_path / "key").write_text("unused\n")
    (tmp_path / "known_hosts").write_text("")
    host = compiler_host(CompileSsh(host="127.0.0.1", port=port, connect_timeout_s=5,
                                    key_file=str(tmp_path / "key"), known_hosts=str(tmp_path / "known_hosts")))
    with pytest.raises(CompileError, match=rf"127.0.0.1:{port}\) is unreachable"):
        compile_model(host, tiny_int8, "model.tflite")


@pytest.mark.skipif(
    shutil.which("sshd") is None and not Path("/usr/sbin/sshd").exists(),
    reason="OpenSSH server (sshd) is not installed here",
)
def test_compiles_on_a_compile_host_over_ssh(
    ssh_compile_host, standin_compiler: Path, tiny_int8: bytes
) -> None:
    params = ssh_compile_host(standin_compiler)
    outcome = compile_model(compiler_host(params), tiny_int8, "model.tflite")
    assert outcome.edgetpu_tflite == tiny_int8
    assert outcome.report.operations_total == _op_count(tiny_int8)


def test_tiny_models_are_what_the_tests_think(tiny_int8: bytes, tiny_float: bytes) -> None:
    from ai_edge_litert.interpreter import Interpreter

    assert Interpreter(model_content=tiny_int8).get_input_details()[0]["dtype"] == np.uint8
    assert Interpreter(model_content=tiny_float).get_input_details()[0]["dtype"] == np.float32


def test_compile_host_without_the_compiler_ships_cpu_only(
    ssh_compile_host, tmp_path: Path, tiny_int8: bytes
) -> None:
    params = ssh_compile_host(tmp_path / "not-installed" / "edgetpu_compiler")
    outcome = compile_model(compiler_host(params), tiny_int8, "model.tflite")
    assert outcome.edgetpu_tflite is None
    assert "not found on compile host" in outcome.skipped_reason and "127.0.0.1" in outcome.skipped_reason
