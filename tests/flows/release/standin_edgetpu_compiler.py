"""A STAND-IN for Google's `edgetpu_compiler`, which cannot be installed here (test double).

It follows the real command line, `edgetpu_compiler [-s] [-o OUT_DIR] [-n N] [-m VERSION] model.tflite...`,
and writes the real output format (see ../shared/edgetpu-compiler/: stdout, `OUT_DIR/<name>_edgetpu.tflite`,
`OUT_DIR/<name>_edgetpu.log`, exit status non-zero on failure). It counts the model's real operations with
LiteRT and reports them all mapped, except operators named in `EDGETPU_STANDIN_CPU_OPS` (comma-separated),
and, as the real compiler does, custom operators (reported as `CUSTOM`, e.g. an SSD's
TFLite_Detection_PostProcess) and operations on float tensors (the DEQUANTIZE feeding it), which stay on the
CPU "working on an unsupported data type".

What it does NOT do: compile. `<name>_edgetpu.tflite` is a byte copy of the input, so it has no
`edgetpu-custom-op` (a real compiled model does, and needs an Edge TPU to run). Everything downstream must
therefore treat the Edge TPU variant as an opaque file and keep the CPU variant correct; a device without an
Edge TPU runs the CPU variant.

Failure modes the real compiler has, reproduced:
- a model that is not fully quantized: "Model not quantized", exit 1;
- `EDGETPU_STANDIN_FAIL=1`: an internal compilation failure, exit 1 (the real compiler's "Compilation
  failed!" ending).
"""

# ruff: noqa: T201 - this is a command-line program: what it prints is the compiler's stdout it imitates.
from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections import Counter
from pathlib import Path

VERSION = "16.0.384591198"
ON_CHIP_BYTES = 8 * 1024 * 1024
NOT_MAPPED = "Operation is otherwise supported, but not mapped due to some unspecified limitation"
UNSUPPORTED_TYPE = "Operation is working on an unsupported data type"
CUSTOM = "CUSTOM"
MAPPED = "Mapped to Edge TPU"
QUANTIZED_DTYPES = ("uint8", "int8")
PARTIAL_MESSAGE = (
    "Model successfully compiled but not all operations are supported by the Edge TPU. A percentage of the "
    "model will instead run on the CPU, which is slower. If possible, consider updating your model to use "
    "only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs."
)


def human(size: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if size < 1024 or unit == "MiB":
            return f"{size:.2f}{unit}"
        size /= 1024
    return f"{size:.2f}GiB"


def table(rows: list[tuple[str, int, str]]) -> str:
    lines = [f"{'Operator':<31}{'Count':<11}Status", ""]
    lines += [f"{name:<31}{count:<11}{status}" for name, count, status in rows]
    return "\n".join(lines)


def compile_one(model: Path, out_dir: Path, show_table: bool) -> int:
    from ai_edge_litert.interpreter import Interpreter

    print(f"Edge TPU Compiler version {VERSION}")
    interpreter = Interpreter(model_path=str(model))
    inputs = interpreter.get_input_details()
    details = [op for op in interpreter._get_ops_details() if op["op_name"] != "DELEGATE"]
    dtypes = {t["index"]: t["dtype"].__name__ for t in interpreter.get_tensor_details()}
    if any(detail["dtype"].__name__ not in QUANTIZED_DTYPES for detail in inputs):
        print(f"Invalid model: {model.name}")
        print("Model not quantized")
        return 1
    if os.environ.get("EDGETPU_STANDIN_FAIL"):
        print("ERROR: Internal compiler error. Aborting! ")
        print("Compilation failed: Compilation failed due to large activation tensors in model.")
        print("Compilation child process completed within timeout period.")
        print("Compilation failed! ")
        return 1
    print("Started a compilation timeout timer of 180 seconds.")
    print()
    print("Model compiled successfully in 12 ms.")
    print()
    cpu_names = {
        name.strip() for name in os.environ.get("EDGETPU_STANDIN_CPU_OPS", "").split(",") if name.strip()
    }
    def row(op: dict) -> tuple[str, str]:
        name = op["op_name"]
        if name != name.upper():  # builtin operators are upper case; custom ones are named by their authors
            return CUSTOM, UNSUPPORTED_TYPE
        tensors = [dtypes.get(t, "uint8") for t in (*op["inputs"], *op["outputs"]) if t >= 0]
        if any(dtype.startswith("float") for dtype in tensors):
            return name, UNSUPPORTED_TYPE
        return name, NOT_MAPPED if name in cpu_names else MAPPED

    ops = [row(op)[0] for op in details]
    counts = Counter(row(op) for op in details)
    rows = [(name, count, status) for (name, status), count in counts.items()]
    on_cpu = sum(count for name, count, status in rows if status != MAPPED)
    output = out_dir / f"{model.stem}_edgetpu.tflite"
    log_file = out_dir / f"{model.stem}_edgetpu.log"
    shutil.copyfile(model, output)
    size = model.stat().st_size
    print(f"Input model: {model.name}")
    print(f"Input size: {human(size)}")
    print(f"Output model: {output.name}")
    print(f"Output size: {human(output.stat().st_size)}")
    print(f"On-chip memory used for caching model parameters: {human(size)}")
    print(f"On-chip memory remaining for caching model parameters: {human(ON_CHIP_BYTES - size)}")
    print("Off-chip memory used for streaming uncached model parameters: 0.00B")
    print("Number of Edge TPU subgraphs: 1")
    print(f"Total number of operations: {len(ops)}")
    print(f"Operation log: {log_file.name}")
    print()
    if on_cpu:
        print(PARTIAL_MESSAGE)
        print(f"Number of operations that will run on Edge TPU: {len(ops) - on_cpu}")
        print(f"Number of operations that will run on CPU: {on_cpu}")
        if show_table:
            print()
            print(table(rows))
    if not show_table or not on_cpu:
        print("See the operation log file for individual operation details.")
    print("Compilation child process completed within timeout period.")
    print("Compilation succeeded! ")
    log_file.write_text(
        f"Edge TPU Compiler version {VERSION}\nInput: {model.name}\nOutput: {output.name}\n\n{table(rows)}\n"
    )
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="edgetpu_compiler")
    parser.add_argument("-s", "--show_operations", action="store_true")
    parser.add_argument("-o", "--out_dir", default=".")
    parser.add_argument("-n", "--num_segments", type=int, default=1)
    parser.add_argument("-m", "--min_runtime_version", default="14")
    parser.add_argument("models", nargs="+")
    args = parser.parse_args(argv)
    out_dir = Path(args.out_dir)
    for model in args.models:
        status = compile_one(Path(model), out_dir, args.show_operations)
        if status:
            return status
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
