"""Label files: one label a line (id = line index), or pycoral's `id label` lines."""

from __future__ import annotations

import re
from pathlib import Path

from edgefleet.kernel.errors import LabelsError

_ID_LINE = re.compile(r"^\s*(\d+)[:\s]+(\S.*?)\s*$")


def parse_labels(text: str) -> dict[int, str]:
    """Parses label text: `id label` lines when every non-blank line has that form, else line indices.

    Raises:
        ValueError: An id appears twice.
    """
    lines = text.splitlines()
    matches = [_ID_LINE.match(line) for line in lines if line.strip()]
    numbered = [match for match in matches if match is not None]
    if numbered and len(numbered) == len(matches):
        labels: dict[int, str] = {}
        for match in numbered:
            label_id = int(match.group(1))
            if label_id in labels:
                raise ValueError(f"id {label_id} appears twice")
            labels[label_id] = match.group(2)
        return labels
    return {index: line.strip() for index, line in enumerate(lines)}


def read_label_file(path: str | Path) -> dict[int, str]:
    """Reads a labels file into {id: label}.

    Raises:
        LabelsError: The file is missing, unreadable or inconsistent.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise LabelsError(f"labels file {path} does not exist", fix="check the --labels path") from error
    except (OSError, UnicodeDecodeError) as error:
        raise LabelsError(f"labels file {path} cannot be read: {error}",
                          fix="use a UTF-8 text file with one label a line") from error
    try:
        labels = parse_labels(text)
    except ValueError as error:
        raise LabelsError(f"labels file {path}: {error}", fix="give each class id one line") from error
    if not labels:
        raise LabelsError(f"labels file {path} is empty",
                          fix="use the labels file the model was trained with")
    return labels


def class_id_count(labels: dict[int, str]) -> int:
    """The class ids a label map spans: 0 up to its highest id that names a label, so that a class list
    `range(class_id_count(labels))` holds every label's id. COCO's 80 labels have ids 0..89 with gaps (90):
    counting the labels (80) would leave ids 80..89 out, lumped together. 0 for no label."""
    named = [label_id for label_id, label in labels.items() if label.strip()]
    return max(named) + 1 if named else 0


def check_label_count(labels: dict[int, str], class_count: int, path: str | Path) -> None:
    """Checks the labels cover exactly the model's classes 0..class_count-1.

    Raises:
        LabelsError: Naming both counts and the file.
    """
    if len(labels) != class_count or set(labels) != set(range(class_count)):
        raise LabelsError(
            f"labels file {path} has {len(labels)} labels (ids {min(labels)}..{max(labels)}) but the model "
            f"outputs {class_count} classes",
            fix="use the labels file the model was trained with (one label a line, line N = class N)")
