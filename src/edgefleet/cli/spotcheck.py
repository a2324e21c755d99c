"""`edgefleet spotcheck pending|import`: the labelled spot check (issue 25), the operator's side.

Devices that opt in (`spot_check.enabled` in agent.yaml) upload a sample of their frames to
`spotcheck/<device_id>/` in the registry bucket. `pending` writes the frames not labelled yet as a CSV for the
labellers (device_id, frame_id, image, and an empty label column; the model's answer is left out so it cannot
anchor the labeller); `import` reads the labelled file back and records, per device, each frame's label and
whether the model was right (`fleet/spotcheck-labels/<device_id>.json`), which `fleet status` shows beside the
estimated accuracy. Every row is checked before anything is written: with any problem nothing is imported.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from edgefleet.cli.registry import RegistryOption
from edgefleet.kernel.console import cli_error
from edgefleet.kernel.errors import EdgefleetError

if TYPE_CHECKING:
    from edgefleet.flows.registry import RegistryWriter
    from edgefleet.kernel.contracts.spotcheck import SpotLabels

app = typer.Typer(help="The labelled spot check: frames devices sent for labelling, and their labels.",
                  no_args_is_help=True)


def _open(uri: str | None) -> RegistryWriter:
    from edgefleet.flows.registry import open_registry_writer
    from edgefleet.flows.release.params import DEFAULT_REGISTRY

    return open_registry_writer(uri or DEFAULT_REGISTRY)


def import_labels(registry: RegistryWriter, path: Path, now: datetime) -> tuple[dict[str, SpotLabels], int]:
    """Checks every row of the labeller's file against the uploaded samples, then writes each device's labelled
    record (compare-and-swap on what was read). Returns (device -> its record, unlabelled rows skipped).

    Raises:
        LabelsError: the file or a sample it names has problems (nothing written).
        ConflictError: another import wrote a device's record meanwhile (run it again: importing is idempotent).
    """
    from edgefleet.kernel.contracts.spotcheck import SpotLabels, labels_key
    from edgefleet.monitor.spotcheck_labels import label_samples, merged, parse_labels

    parsed = parse_labels(path)
    labelled = label_samples(registry, path, parsed.rows)
    records: dict[str, tuple[SpotLabels, int]] = {}
    for device_id, samples in sorted(labelled.items()):  # every record read and merged before any write
        current = registry.read_json(labels_key(device_id))
        existing = SpotLabels.model_validate(current.value) if current.value is not None else None
        records[device_id] = merged(existing, device_id, samples, now), current.generation
    for device_id, (record, generation) in records.items():
        registry.put_json(labels_key(device_id), record, expected_generation=generation)
    return {device_id: record for device_id, (record, _) in records.items()}, parsed.unlabelled


def pending_rows(registry: RegistryWriter, device: str | None) -> list[dict[str, str]]:
    """The uploaded samples not labelled yet (oldest first per device), as rows of the labellers' CSV."""
    from edgefleet.kernel.contracts.spotcheck import SPOTCHECK_PREFIX, check_frame_id, device_prefix, sample_keys
    from edgefleet.monitor.spotcheck_labels import read_labels

    prefix = device_prefix(device) if device else f"{SPOTCHECK_PREFIX}/"
    found: dict[str, list[str]] = {}
    for key in registry.list_json(prefix):
        parts = key.split("/")
        try:
            frame = check_frame_id(parts[-1].removesuffix(".json"))
        except ValueError:
            continue
        if len(parts) == 3:  # spotcheck/<device>/<frame>.json
            found.setdefault(parts[1], []).append(frame)
    rows: list[dict[str, str]] = []
    for device_id, frames in sorted(found.items()):
        record = read_labels(registry, device_id)
        done = {sample.frame_id for sample in record.samples} if record else set()
        rows += [{"device_id": device_id, "frame_id": frame, "image": registry.describe(sample_keys(device_id,
                  frame)[0]), "label": ""} for frame in sorted(frames) if frame not in done]
    return rows


@app.command()
def pending(
    device: str = typer.Option(None, "--device", help="only this device's samples"),
    out: Path = typer.Option(None, "--out", "-o", help="write the CSV here (default: standard output)"),
    registry_uri: str = RegistryOption,
) -> None:
    """The frames devices sent that nobody labelled yet, as the labellers' CSV (fill in the label column)."""
    try:
        rows = pending_rows(_open(registry_uri), device)
    except EdgefleetError as error:
        raise cli_error(error) from error
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["device_id", "frame_id", "image", "label"])
    writer.writeheader()
    writer.writerows(rows)
    if out is None:
        typer.echo(buffer.getvalue(), nl=False)
        return
    try:
        out.write_text(buffer.getvalue())
    except OSError as error:
        raise cli_error(EdgefleetError(f"cannot write {out}: {error.strerror}", "pass a writable --out")) from error
    typer.echo(f"{len(rows)} frame(s) to label written to {out}", err=True)


@app.command("import")
def import_(
    labels: Path = typer.Argument(..., help="the labelled CSV (device_id,frame_id,label; `pending` writes it) or "
                                            "JSON Lines (.jsonl) with those keys"),
    registry_uri: str = RegistryOption,
) -> None:
    """Record the labels of spot-check frames: per device, the label and whether the model was right."""
    from edgefleet.monitor.spotcheck import spot_check

    try:
        records, unlabelled = import_labels(_open(registry_uri), labels, datetime.now(UTC))
    except EdgefleetError as error:
        raise cli_error(error) from error
    for device_id, record in records.items():
        latest = record.samples[-1].model_version if record.samples else None
        result = spot_check(device_id, latest, record.samples) if latest else None
        summary = f"; {latest}: {result.right}/{result.labelled} right, {result.accuracy.text()}" if result else ""
        typer.echo(f"{device_id}: {len(record.samples)} labelled frame(s){summary}")
    if unlabelled:
        typer.echo(f"{unlabelled} row(s) without a label skipped", err=True)
