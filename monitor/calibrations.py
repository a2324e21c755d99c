"""The release's calibration tables in the fleet state: read once per (model, version) from its manifest.

Manifest schema 3 carries a calibration table (per top-1 score bucket: held-out images and right answers of
the int8 model). The drift tick asks a `CalibrationSource` (the registry's manifests) for every version it sees
without a row and keeps what it found, or why there is none (a schema 2 manifest, a detector), in
`calibrations`. The manifest's signature is not checked here (the monitor holds no release key): the table only
feeds a displayed estimate, never a decision.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from edgefleet.kernel.contracts.manifest import Calibration
from edgefleet.kernel.errors import EdgefleetError
from edgefleet.monitor.drift import CalibrationTable, DriftError, fit_counts

log = logging.getLogger(__name__)

CalibrationSource = Callable[[str, str], Calibration | None]
"""(model, version) -> the manifest's table, None when the manifest has none; raises EdgefleetError when the
manifest cannot be read (tried again at the next tick)."""
NO_TABLE = "the manifest has no calibration table (manifest schema before 3, or a detector)"


def registry_source(registry: str) -> CalibrationSource:
    """The tables of the manifests in `registry` (a registry URI: gs://..., file path)."""
    from edgefleet.device.registry import open_registry_reader

    reader = open_registry_reader(registry)

    def source(model: str, version: str) -> Calibration | None:
        return reader.read_manifest(model, version).manifest.calibration
    return source


def record_missing(connection: Any, source: CalibrationSource, versions: Iterable[tuple[str, str]]) -> int:
    """Reads the table of each (model, version) that has no row yet; rows written."""
    wanted = sorted(set(versions))
    if not wanted:
        return 0
    known = {(m, v) for m, v in connection.execute("SELECT model_name, model_version FROM calibrations")}
    rows = []
    for model, version in wanted:
        if (model, version) in known:
            continue
        try:
            table = source(model, version)
        except EdgefleetError as error:
            log.warning("no calibration table for %s %s yet: %s", model, version, error.message)
            continue
        rows.append((model, version, None, None, NO_TABLE) if table is None else
                    (model, version, json.dumps(table.images), json.dumps(table.correct), table.split))
    if rows:
        connection.executemany("INSERT INTO calibrations (model_name, model_version, images, correct, note) "
                               "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", rows)
    return len(rows)


def tables(connection: Any, versions: Iterable[tuple[str, str]]) -> dict[tuple[str, str], CalibrationTable | str]:
    """(model, version) -> its fitted table (isotonic), or the note saying why there is none."""
    wanted = set(versions)
    if not wanted:
        return {}
    found: dict[tuple[str, str], CalibrationTable | str] = {}
    for model, version, images, correct, note in connection.execute(
            "SELECT model_name, model_version, images, correct, note FROM calibrations WHERE model_name IN "
            "(SELECT value FROM json_each(?))", (json.dumps(sorted({m for m, _ in wanted})),)):
        if (model, version) not in wanted:
            continue
        try:
            found[(model, version)] = note if images is None else fit_counts(json.loads(images),
                                                                             json.loads(correct))
        except DriftError as error:
            found[(model, version)] = error.message
    return found
