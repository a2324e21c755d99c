"""The labels of the spot check (issue 25): a labeller's file read and checked, joined with the devices' samples.

The labeller's file is CSV (a header with `device_id,frame_id,label`; more columns are ignored, so the template
`edgefleet spotcheck pending` writes comes back as it is) or JSON Lines (`.jsonl`: one object per line with
those keys). A row with an empty label is not labelled yet: skipped and counted. Every problem is collected
and reported at once with its file and line; with any problem nothing is imported. The writing (the operator's
registry writer) is `edgefleet.cli.spotcheck`'s.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

from pydantic import ValidationError

from edgefleet.device.registry.base import RegistryReader
from edgefleet.kernel.contracts.layout import check_name
from edgefleet.kernel.contracts.spotcheck import (
    LabelledSample,
    SpotLabels,
    answer_matches,
    check_frame_id,
    labels_key,
    sample_keys,
)
from edgefleet.kernel.errors import EdgefleetError
from edgefleet.monitor.spotcheck_samples import DEFAULT_MAX_PER_DEVICE, RefusedSample, SampleReader, over_cap_reason

COLUMNS = ("device_id", "frame_id", "label")
MAX_LABEL_CHARS = 200
MAX_PROBLEMS_SHOWN = 20
MAX_LABELS_RECORD_BYTES = 32 * 1024 * 1024
"""A device's labelled record: ~200 bytes a sample, so over a hundred thousand samples."""
JSONL_SUFFIXES = (".jsonl", ".ndjson")
FILE_FIX = ("give a CSV with the header device_id,frame_id,label (the template `edgefleet spotcheck pending "
            "--out FILE` writes) or JSON Lines with those keys, one row per labelled frame")


class LabelRow(NamedTuple):
    """One labelled frame of the labeller's file; `where` is `file:line`."""

    where: str
    device_id: str
    frame_id: str
    label: str


class ParsedLabels(NamedTuple):
    rows: tuple[LabelRow, ...]
    unlabelled: int


class LabelsError(EdgefleetError):
    """The labeller's file (or the samples it names) has problems: nothing was imported."""


def _problems_error(path: Path, problems: Sequence[str], fix: str) -> LabelsError:
    shown = list(problems[:MAX_PROBLEMS_SHOWN])
    more = len(problems) - len(shown)
    return LabelsError(f"{path}: {len(problems)} problem(s), nothing imported:\n  " + "\n  ".join(shown)
                       + (f"\n  ... and {more} more" if more > 0 else ""), fix)


def _raw_rows(path: Path, text: str, problems: list[str]) -> Iterator[tuple[str, Mapping[str, object]]]:
    """(file:line, the row's fields) of a CSV or JSON Lines text."""
    if path.suffix.lower() in JSONL_SUFFIXES:
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                value: object = json.loads(line)
            except ValueError as error:
                problems.append(f"{path}:{number}: not JSON ({error})")
                continue
            if isinstance(value, dict):
                yield f"{path}:{number}", {str(k): v for k, v in value.items()}  # pyright: ignore[reportUnknownVariableType] - JSON keys and values
            else:
                problems.append(f"{path}:{number}: not a JSON object")
        return
    reader = csv.DictReader(text.splitlines())
    missing = [column for column in COLUMNS if column not in (reader.fieldnames or ())]
    if missing:
        problems.append(f"{path}:1: the header lacks {', '.join(missing)} (it has {reader.fieldnames or 'nothing'})")
        return
    for row in reader:
        yield f"{path}:{reader.line_num}", row


def _row(where: str, fields: Mapping[str, object], problems: list[str]) -> LabelRow | None:
    values = {column: fields.get(column) for column in COLUMNS}
    if any(not isinstance(value, str) for value in values.values()):
        problems.append(f"{where}: needs the text fields {', '.join(COLUMNS)}")
        return None
    device, frame, label = (str(values[column]).strip() for column in COLUMNS)
    try:
        check_name("device id", device)
        check_frame_id(frame)
    except ValueError as error:
        problems.append(f"{where}: {error}")
        return None
    if len(label) > MAX_LABEL_CHARS:
        problems.append(f"{where}: the label is {len(label)} characters, more than {MAX_LABEL_CHARS}")
        return None
    return LabelRow(where, device, frame, label)


def parse_labels(path: Path) -> ParsedLabels:
    """The labelled rows of a labeller's file (see the module doc).

    Raises:
        LabelsError: the file cannot be read, or any row is wrong (each named by file and line).
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise LabelsError(f"cannot read the labels file {path}: {error}", FILE_FIX) from error
    problems: list[str] = []
    rows: dict[tuple[str, str], LabelRow] = {}
    unlabelled = 0
    for where, fields in _raw_rows(path, text, problems):
        row = _row(where, fields, problems)
        if row is None:
            continue
        if not row.label:
            unlabelled += 1
            continue
        seen = rows.get((row.device_id, row.frame_id))
        if seen is not None and seen.label != row.label:
            problems.append(f"{where}: {row.device_id} {row.frame_id} labelled {row.label!r} here and "
                            f"{seen.label!r} at {seen.where}")
        rows.setdefault((row.device_id, row.frame_id), row)
    if problems:
        raise _problems_error(path, problems, FILE_FIX)
    return ParsedLabels(tuple(rows.values()), unlabelled)


class JoinedLabels(NamedTuple):
    """The labelled samples by device, and the samples refused (not signed by their folder's device)."""

    labelled: dict[str, list[LabelledSample]]
    refused: tuple[RefusedSample, ...]


def label_samples(samples: SampleReader, path: Path, rows: Iterable[LabelRow],
                  max_per_device: int = DEFAULT_MAX_PER_DEVICE) -> JoinedLabels:
    """Each labelled row joined with its device's signed sample, by device (oldest frame first, at most
    `max_per_device` of a device: the rest refused unread); a refused sample is left out and listed
    (`spotcheck_samples`), never imported.

    Raises:
        LabelsError: a row names no uploaded sample (every such row named).
    """
    labelled: dict[str, list[LabelledSample]] = {}
    refused: list[RefusedSample] = []
    problems: list[str] = []
    for row in sorted(rows, key=lambda row: (row.device_id, row.frame_id)):
        if len(labelled.get(row.device_id, ())) >= max_per_device:
            refused.append(RefusedSample(samples.registry.describe(sample_keys(row.device_id, row.frame_id)[1]),
                                         over_cap_reason(max_per_device)))
            continue
        sample = samples.read(row.device_id, row.frame_id)
        if sample is None:
            problems.append(f"{row.where}: no sample {row.frame_id} of {row.device_id} in {samples.registry.uri}")
            continue
        if isinstance(sample, RefusedSample):
            refused.append(sample)
            continue
        labelled.setdefault(row.device_id, []).append(LabelledSample(
            frame_id=sample.frame_id, model=sample.model, model_version=sample.model_version,
            answer_id=sample.answer_id,
            answer_label=sample.answer_label, answer_score=sample.answer_score, label=row.label,
            correct=answer_matches(row.label, sample.answer_id, sample.answer_label),
            key_id=samples.key_id(row.device_id)))
    if problems:
        raise _problems_error(path, problems, "fix the device and frame ids named (they come from `edgefleet "
                                              "spotcheck pending`), or check --registry names the devices' bucket")
    return JoinedLabels(labelled, tuple(refused))


def merged(existing: SpotLabels | None, device_id: str, new: Iterable[LabelledSample], now: datetime) -> SpotLabels:
    """The device's labelled record with `new` added (a frame labelled again takes the new label)."""
    by_frame = {sample.frame_id: sample for sample in (existing.samples if existing else ())}
    by_frame.update((sample.frame_id, sample) for sample in new)
    return SpotLabels(device_id=device_id, updated_at=now, samples=tuple(by_frame[f] for f in sorted(by_frame)))


def checked_labels(value: object, device_id: str, where: str) -> SpotLabels:
    """The labelled record `value` read at `where` (`fleet/spotcheck-labels/<device_id>.json`). Pure.

    Raises:
        EdgefleetError: not a labelled record, or one naming another device (a record speaks only for the
            device its file is named after).
    """
    try:
        record = SpotLabels.model_validate(value)
    except ValidationError as error:
        raise EdgefleetError(f"{where} is not a spot check labels record: {error}",
                             "import the labels again (`edgefleet spotcheck import`) after removing it") from None
    if record.device_id != device_id:
        raise EdgefleetError(f"{where} names device {record.device_id}: a labels record speaks only for the device "
                             "its file is named after",
                             "remove it (check who can write fleet/ in the registry), then import that device's "
                             "labels again")
    return record


def read_labels(registry: RegistryReader, device_id: str) -> SpotLabels | None:
    """The device's labelled record (None: nothing labelled yet).

    Raises:
        EdgefleetError: unreadable, not a labelled record, or one naming another device.
    """
    key = labels_key(device_id)
    value = registry.get_json_bounded(key, MAX_LABELS_RECORD_BYTES)
    return None if value is None else checked_labels(value, device_id, registry.describe(key))
