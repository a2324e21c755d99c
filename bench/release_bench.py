"""Release pipeline benchmarks (issues 3 and 15).

Section `pipeline` (issue 3), on the built-in demo dataset with the default release parameters:
1. Quantization quality: float32 vs int8 top-1 accuracy on the held-out split (goal: drop <= 1 point), and
   int8 / float32 TFLite size (goal: <= 0.3).
2. Release wall time, per stage and whole (goal: < 2 minutes on a 2-core machine), from a cold work directory
   (demo data generated, model trained) into a fresh local registry.
3. Cached re-run: the same release again (training and conversion come from the task cache), the median of
   `--reruns` runs, against the first run (goal: <= 0.2x).

The flows run on a real temporary Prefect API (prefect_test_harness); its start-up is not counted. The Edge
TPU compiler is used when installed (`edgetpu_compiler` on PATH) and reported absent otherwise.

Section `trainer` (issue 15): the default trainer against a plain Keras CNN (Conv32-Pool-Conv64-Pool-Flatten-
Dense64, Adam 1e-3, batch 32: the textbook baseline) trained in the same run on the same split of a real image
set, UCI handwritten digits (bundled with scikit-learn: 1,797 8x8 images, upscaled to 32x32 by the release's
own loader; 1,437 training / 360 held-out), same epochs, several seeds; plus the default trainer without its
schedule, validation split, early stopping and augmentation (what they add). On the demo shapes every trainer
scores 100%, so they cannot tell trainers apart. The previous default (before issue 15) is rebuilt in the bench
for comparison.

Section `transfer` (issue 15): transfer learning against training from scratch at the same epochs. A
MobileNetV2 backbone is pretrained in the bench itself on digits 0-4 (ImageNet weights cannot be downloaded
here; their loading path is the same `training.weights: PATH` path, tested with a weights file) and
transferred to digits 5-9 with few training images per class: from scratch, head only, last blocks, all.

Section `byom` (issue 15): releasing a brought .tflite end to end (Coral's published classifiers, from
../shared/coral-test-data or $EDGEFLEET_CORAL_TEST_DATA): with a small labelled image folder, and without a
dataset with its Edge TPU twin (goal: < 30 s each).

Run: `python -m bench.release_bench [--section all|pipeline|trainer|transfer|byom] [--architecture
small_cnn|mobilenet_v2] [--epochs N] [--reruns N] [--seeds N] [--json]`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.release_measure import (
    CORAL_DEFAULT,
    DIGITS_EPOCHS,
    TRANSFER_EPOCHS,
    TRANSFER_PER_CLASS,
    TRANSFER_PRETRAIN_EPOCHS,
    run,
    run_byom,
    run_trainer,
    run_transfer,
)

console = Console()

GOAL_DROP_POINTS = 1.0
GOAL_SIZE_RATIO = 0.3
GOAL_RELEASE_S = 120.0
GOAL_CACHED_RATIO = 0.2
GOAL_BYOM_S = 30.0


def _mark(ok: bool) -> str:
    return "[green]met[/]" if ok else "[red]missed[/]"


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    return table


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def render_trainer(result: dict) -> None:
    table = _table(
        f"default trainer vs plain Keras: {result['dataset']}, {result['train_images']} training / "
        f"{result['eval_images']} held-out images, {result['epochs']} epochs, {result['seeds']} seeds",
        "trainer", "held-out accuracy (mean)", "per seed", "seconds (mean)",
    )
    for name, accuracies in result["accuracy"].items():
        table.add_row(
            name, f"{_mean(accuracies):.2%}", ", ".join(f"{a:.2%}" for a in accuracies),
            f"{_mean(result['seconds'][name]):.1f}",
        )
    console.print(table)
    ok = _mean(result["accuracy"]["default"]) >= _mean(result["accuracy"]["plain Keras"])
    console.print(f"default >= plain Keras: {_mark(ok)}")


def render_transfer(result: dict) -> None:
    table = _table(
        f"transfer vs scratch: {result['backbone']}; pretrained on {result['pretrain']} "
        f"({result['pretrain_accuracy']:.2%}, {result['pretrain_s']:.0f} s); learning {result['target']}; "
        f"{result['epochs']} epochs max",
        "starting point", "held-out accuracy", "training seconds",
    )
    for name, row in result["results"].items():
        table.add_row(name, f"{row['accuracy']:.2%}", f"{row['seconds']:.1f}")
    console.print(table)


def render_byom(result: dict) -> None:
    table = _table(
        "bring your own model: whole release (Prefect flow), Coral's classifiers",
        "release", "seconds", "goal", "", "int8 accuracy", "variants", "Edge TPU model",
    )
    for name, row in result["releases"].items():
        accuracy = "not evaluated" if row["int8_accuracy"] is None else f"{row['int8_accuracy']:.2%}"
        table.add_row(
            name, f"{row['seconds']:.1f}", f"< {GOAL_BYOM_S:.0f} s", _mark(row["seconds"] < GOAL_BYOM_S),
            accuracy, ", ".join(row["variants"]), row["compiler"],
        )
    console.print(table)


def render(result: dict) -> None:
    table = _table(
        f"edgefleet release benchmarks: demo dataset, {result['architecture']} "
        f"{result['input_size']}px, {result['epochs']} epochs ({result['cores']} cores)",
        "measure", "result", "goal", "",
    )
    table.add_row(
        "float32 accuracy (held-out)", f"{result['float_accuracy']:.2%} of {result['eval_samples']}", "", ""
    )
    table.add_row("int8 accuracy (held-out)", f"{result['int8_accuracy']:.2%}", "", "")
    table.add_row(
        "accuracy drop float -> int8",
        f"{result['drop_points']:.2f} points",
        f"<= {GOAL_DROP_POINTS} point",
        _mark(result["drop_points"] <= GOAL_DROP_POINTS),
    )
    table.add_row(
        "size int8 / float32",
        f"{result['size_ratio']:.3f} ({result['int8_size_bytes']} / {result['float_size_bytes']} bytes)",
        f"<= {GOAL_SIZE_RATIO}",
        _mark(result["size_ratio"] <= GOAL_SIZE_RATIO),
    )
    table.add_row(
        "whole release, first run",
        f"{result['first_s']:.1f} s",
        f"< {GOAL_RELEASE_S:.0f} s",
        _mark(result["first_s"] < GOAL_RELEASE_S),
    )
    for stage, seconds in result["first_stages_s"].items():
        table.add_row(
            f"  stage {stage}",
            f"{seconds:.2f} s (cached run {result['cached_stages_s'].get(stage, 0):.2f} s)",
            "",
            "",
        )
    table.add_row(
        "cached re-run (median) / first run",
        f"{result['cached_s']:.2f} s = {result['cached_ratio']:.3f}x",
        f"<= {GOAL_CACHED_RATIO}x",
        _mark(result["cached_ratio"] <= GOAL_CACHED_RATIO),
    )
    table.add_row("imports (TensorFlow, Prefect), not counted", f"{result['import_s']:.1f} s", "", "")
    table.add_row("Edge TPU compiler", result["compiler"], "", "")
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--section", choices=("all", "pipeline", "trainer", "transfer", "byom"), default="all"
    )
    parser.add_argument("--architecture", choices=("small_cnn", "mobilenet_v2"), default="small_cnn")
    parser.add_argument("--epochs", type=int, default=None, help="default: the release default")
    parser.add_argument("--reruns", type=int, default=3, help="cached re-runs (the median is reported)")
    parser.add_argument("--seeds", type=int, default=3, help="trainer section: seeds per trainer")
    parser.add_argument("--json", action="store_true", help="print the measurements as JSON")
    args = parser.parse_args(argv if argv is not None else sys.argv[1:] if __name__ == "__main__" else [])
    logging.basicConfig(level=logging.WARNING)
    wanted = ("pipeline", "trainer", "transfer", "byom") if args.section == "all" else (args.section,)
    coral = Path(os.environ.get("EDGEFLEET_CORAL_TEST_DATA", CORAL_DEFAULT))
    sections = {
        "pipeline": (lambda: run(args.architecture, args.epochs, max(1, args.reruns)), render),
        "trainer": (lambda: run_trainer(args.epochs or DIGITS_EPOCHS, max(1, args.seeds)), render_trainer),
        "transfer": (
            lambda: run_transfer(args.epochs or TRANSFER_EPOCHS, TRANSFER_PRETRAIN_EPOCHS, TRANSFER_PER_CLASS),
            render_transfer,
        ),
        "byom": (lambda: run_byom(coral), render_byom),
    }
    results = {}
    for name in wanted:
        measure, show = sections[name]
        results[name] = measure()
        if not args.json:
            show(results[name])
    if args.json:
        console.print_json(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
