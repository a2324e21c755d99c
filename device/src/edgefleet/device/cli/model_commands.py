"""`edgefleet-agent inspect | classify | detect`: look at and run a model on image files.

`exit_on_error()` is the shared way device commands turn an `EdgefleetError` into a message, its fix and
exit code 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from edgefleet.device.cli import app
from edgefleet.device.runtime.config import DEFAULT_RUNTIME_CONFIG
from edgefleet.kernel.console import exit_on_error

if TYPE_CHECKING:  # the runtime (numpy, LiteRT) loads only for the commands that run a model
    from edgefleet.device.runtime.engine import Engine, InferenceResult, Task

def _echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2))


ModelArg = Annotated[Path, typer.Argument(help="a .tflite model", show_default=False)]
ImagesArg = Annotated[list[Path], typer.Argument(help="image files", show_default=False)]
LabelsOpt = Annotated[Path, typer.Option("--labels", help="labels file (one label a line, id = line index)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON (a list: one object per image)")]
DeviceOpt = Annotated[str, typer.Option("--device",
                                        help="'auto', 'cpu', or an Edge TPU: usb, usb:0, pci, :0")]
ThreadsOpt = Annotated[int, typer.Option("--threads", min=1, help="CPU interpreter threads")]


@app.command()
def inspect(model: ModelArg,
            as_json: Annotated[bool, typer.Option("--json", help="print the model report as JSON")] = False,
            ) -> None:
    """Show a model's inputs, outputs, and whether it needs the Edge TPU."""
    with exit_on_error():
        from edgefleet.device.runtime.interpreter import inspect_model

        info = inspect_model(model)
    if as_json:
        _echo_json(info.to_dict())
        return
    console = Console()
    console.print(f"[bold]{info.path}[/]  {info.size} bytes  sha256 {info.sha256}")
    console.print(f"needs Edge TPU: [bold]{'yes' if info.needs_edgetpu else 'no'}[/]"
                  + (f"  custom ops: {', '.join(info.custom_ops)}" if info.custom_ops else ""))
    table = Table("tensor", "name", "shape", "dtype", "scale", "zero point")
    for kind, specs in (("input", info.inputs), ("output", info.outputs)):
        for spec in specs:
            q = spec.quantization
            table.add_row(kind, spec.name, "x".join(map(str, spec.shape)), spec.dtype,
                          f"{q.scale:g}" if q.scale else "-", str(q.zero_point) if q.scale else "-")
    console.print(table)


def _image_result(image: Path, result: InferenceResult, backend: str) -> dict[str, Any]:
    return {"image": str(image), "results": [item.to_dict() for item in result.results],
            "latency_ms": round(result.latency_ms, 3), "backend": backend}


def _run_images(engine: Engine, images: list[Path], as_json: bool) -> None:
    from edgefleet.device.runtime.preprocess import load_image

    rows: list[dict[str, Any]] = []
    for image in images:
        frame = load_image(image)
        result = engine.infer(engine.prepare(frame), image_size=(frame.shape[1], frame.shape[0]))
        rows.append(_image_result(image, result, engine.backend))
    if as_json:
        _echo_json(rows)
        return
    console = Console()
    for row in rows:
        table = Table("id", "label", "score", title=Path(row["image"]).name,
                      caption=f"{row['backend']}, {row['latency_ms']:.1f} ms")
        if engine.task == "detection":
            table.add_column("box (xmin, ymin, xmax, ymax)")
        for item in row["results"]:
            cells = [str(item["id"]), item["label"], f"{item['score']:.3f}"]
            if "box" in item:
                cells.append(", ".join(str(v) for v in item["box"].values()))
            table.add_row(*cells)
        if not row["results"]:
            console.print(f"{row['image']}: nothing above the threshold")
        else:
            console.print(table)


def _run(task: Task, model: Path, images: list[Path], labels: Path, *, top_k: int | None,
         threshold: float | None, device: str, threads: int, as_json: bool) -> None:
    with exit_on_error():
        from edgefleet.device.runtime.engine import Engine

        with Engine.open(model, labels_path=labels, task=task, device=device, num_threads=threads,
                         top_k=top_k, score_threshold=threshold) as engine:
            _run_images(engine, images, as_json)


@app.command()
def classify(
    model: ModelArg,
    images: ImagesArg,
    labels: LabelsOpt,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="results per image")] = (
        DEFAULT_RUNTIME_CONFIG.top_k),
    threshold: Annotated[float, typer.Option("--threshold", help="minimum score")] = (
        DEFAULT_RUNTIME_CONFIG.classification_threshold),
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = DEFAULT_RUNTIME_CONFIG.num_threads,
    as_json: JsonOpt = False,
) -> None:
    """Classify images with a model (Edge TPU when it needs one, else the CPU)."""
    _run("classification", model, images, labels, top_k=top_k, threshold=threshold, device=device,
         threads=threads, as_json=as_json)


@app.command()
def detect(
    model: ModelArg,
    images: ImagesArg,
    labels: LabelsOpt,
    threshold: Annotated[float, typer.Option("--threshold", help="minimum score")] = (
        DEFAULT_RUNTIME_CONFIG.detection_threshold),
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = DEFAULT_RUNTIME_CONFIG.num_threads,
    as_json: JsonOpt = False,
) -> None:
    """Detect objects in images with an SSD model; boxes are in image pixels."""
    _run("detection", model, images, labels, top_k=None, threshold=threshold, device=device, threads=threads,
         as_json=as_json)
