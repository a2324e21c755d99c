"""The release's calibration tables in the fleet state: taken only from manifests whose signature verifies.

Manifest schema 3 carries a calibration table (per top-1 score bucket: held-out images and right answers of the
int8 model); the accuracy estimate (`fleet status`, the fleet page, the metrics) weights each device's scores by
it, so a table is taken the way a device takes a model: from a manifest that verifies against the release
keyring (`drift.public_key`, checked by `edgefleet.device.trust.version_bundle.verify_manifest_bytes`). The drift tick
asks a `CalibrationSource` for the versions it sees and keeps one row per (model, version) in `calibrations`:

| state    | what the row holds                                                     | read again                    |
|----------|------------------------------------------------------------------------|-------------------------------|
| verified | the verified manifest's table (or why it has none) and its sha256       | every `calibration_recheck_s` |
| refused  | why not: altered, signed by no release key, a development key refused,  | every tick                    |
|          | another version's manifest, or the monitor has no release key          |                               |
| NULL     | a row written before signatures were checked: never trusted             | every tick                    |

A refused row is replaced by the next read. A verified table is never replaced: a release version is immutable,
so a different signed manifest for it (or one that no longer verifies) is an error in the log and in the row's
`conflict`, shown beside the estimate. A manifest that cannot be read (registry unreachable) changes nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from edgefleet.device.trust.version_bundle import refuse_development_signed, verify_manifest_bytes
from edgefleet.kernel.contracts.layout import MANIFEST_FILE
from edgefleet.kernel.contracts.manifest import Calibration
from edgefleet.kernel.errors import ConfigError, EdgefleetError, VerificationError
from edgefleet.kernel.trust.release_keyring import KeyringLike, load_keyring
from edgefleet.monitor.drift import CalibrationTable, DriftError, fit_counts

if TYPE_CHECKING:
    from edgefleet.monitor.config import DriftWatchConfig

log = logging.getLogger(__name__)

VERIFIED = "verified"
REFUSED = "refused"
NO_TABLE = "the manifest has no calibration table (manifest schema before 3, or a detector)"
NO_KEY = ("the monitor has no release public key (drift.public_key): it takes a calibration table only from a "
          "manifest whose signature verifies")
NO_KEY_FIX = "set drift.public_key to the release public key file or keyring directory the devices have"
UNCHECKED = "read before the monitor checked manifest signatures: it is read again at the next tick"


@dataclass(frozen=True)
class VerifiedTable:
    """What a manifest that verified says: its sha256 and its table (None: it has none)."""

    manifest_sha256: str
    calibration: Calibration | None


CalibrationSource = Callable[[str, str], VerifiedTable]
"""(model, version) -> its manifest's table, verified. Raises VerificationError when the manifest does not verify
(recorded as refused with the reason, read again at the next tick), another EdgefleetError when it cannot be read
(nothing recorded, read again at the next tick)."""


@dataclass(frozen=True)
class Refusal:
    reason: str


Outcome = VerifiedTable | Refusal


@dataclass(frozen=True)
class Row:
    """A `calibrations` row."""

    model: str
    version: str
    state: str | None
    images: tuple[int, ...] | None
    correct: tuple[int, ...] | None
    note: str
    manifest_sha256: str | None = None
    checked_at: float | None = None
    conflict: str | None = None


# --- the verified read ----------------------------------------------------------------------------------------
def registry_source(registry: str, public_key: KeyringLike | None, *,
                    refuse_development: bool = False) -> CalibrationSource:
    """The verified tables of the manifests in `registry` (gs://..., a directory), checked against `public_key`
    (the release keyring, a key, or a key file / keyring directory, read at each check so a key added by a
    rotation counts); without a key every table is refused (`NO_KEY`)."""
    if public_key is None:
        def refuse(model: str, version: str) -> VerifiedTable:
            raise VerificationError(NO_KEY, NO_KEY_FIX)
        return refuse

    from edgefleet.device.registry import open_registry_reader

    reader = open_registry_reader(registry)

    def source(model: str, version: str) -> VerifiedTable:
        signed = reader.read_manifest(model, version)
        where = f"{reader.uri} {model} {version} {MANIFEST_FILE}"
        manifest = verify_manifest_bytes(signed.raw, signed.signature, public_key, source=where)
        if (manifest.model, manifest.version) != (model, version):  # read_manifest checks it too: never rely on one
            raise VerificationError(f"{where} is the manifest of {manifest.model} {manifest.version}",
                                    "the registry object was copied or replaced by hand: re-publish the version")
        if refuse_development:
            refuse_development_signed(manifest, where, by="the monitor (drift.refuse_development_keys)")
        return VerifiedTable(signed.manifest_sha256, manifest.calibration)
    return source


def source_for(config: DriftWatchConfig, registry: str) -> CalibrationSource:
    """The source the monitor's drift config gives: its release keyring, read now so a wrong path stops the start.

    Raises:
        ConfigError: `public_key` names no readable release key.
    """
    if config.public_key is None:
        log.warning("%s: no accuracy estimate (%s)", NO_KEY, NO_KEY_FIX)
    else:
        try:
            load_keyring(config.public_key)
        except VerificationError as error:
            raise ConfigError(f"monitor drift.public_key: {error.message}", error.fix) from error
    return registry_source(registry, config.public_key, refuse_development=config.refuse_development_keys)


# --- the decisions (pure) -------------------------------------------------------------------------------------
def due(row: Row | None, now: float, recheck_s: float) -> bool:
    """Whether the version's manifest is to be read now: never read, refused or unchecked; verified, every
    `recheck_s`."""
    if row is None or row.state != VERIFIED:
        return True
    return row.checked_at is None or now - row.checked_at >= recheck_s


def decide(row: Row | None, model: str, version: str, outcome: Outcome, now: float) -> Row:
    """The row after reading the manifest: a refused or unchecked row takes the outcome; a verified row keeps its
    table, and a different signed manifest (or one that no longer verifies) is its conflict."""
    if row is None or row.state != VERIFIED:
        if isinstance(outcome, Refusal):
            return Row(model, version, REFUSED, None, None, outcome.reason, checked_at=now)
        table = outcome.calibration
        return Row(model, version, VERIFIED, table.images if table else None, table.correct if table else None,
                   table.split if table else NO_TABLE, outcome.manifest_sha256, now)
    if isinstance(outcome, VerifiedTable) and outcome.manifest_sha256 == row.manifest_sha256:
        return replace(row, checked_at=now, conflict=None)
    return replace(row, checked_at=now, conflict=conflict_note(row, outcome))


def conflict_note(row: Row, outcome: Outcome) -> str:
    """What a verified row's re-read found instead of its own manifest."""
    kept = f"the table verified before (manifest sha256 {(row.manifest_sha256 or '')[:16]}...) stays in use"
    if isinstance(outcome, Refusal):
        return (f"the manifest of {row.model} {row.version} read again from the registry did not verify "
                f"({outcome.reason}); {kept}: check the registry object and the monitor's release keyring")
    return (f"the registry now holds a different signed manifest of {row.model} {row.version} (sha256 "
            f"{outcome.manifest_sha256[:16]}...): release versions are immutable, so {kept}; find out who "
            "re-published the version with the release key")


# --- the fleet state ------------------------------------------------------------------------------------------
_COLUMNS = "model_name, model_version, state, images, correct, note, manifest_sha256, checked_at, conflict"


def read_table_rows(connection: Any, models: Iterable[str]) -> dict[tuple[str, str], Row]:
    """(model, version) -> its row, for every version of `models`."""
    found = {}
    for model, version, state, images, correct, note, sha, checked_at, conflict in connection.execute(
            f"SELECT {_COLUMNS} FROM calibrations WHERE model_name IN (SELECT value FROM json_each(?))",
            (json.dumps(sorted(set(models))),)):
        found[(model, version)] = Row(model, version, state, None if images is None else tuple(json.loads(images)),
                                      None if correct is None else tuple(json.loads(correct)), note, sha,
                                      checked_at, conflict)
    return found


def record_missing(connection: Any, source: CalibrationSource, versions: Iterable[tuple[str, str]], now: float,
                   recheck_s: float) -> int:
    """Reads the manifest of each (model, version) that is due (`due`) and writes its row (`decide`); rows
    written."""
    wanted = sorted(set(versions))
    if not wanted:
        return 0
    known = read_table_rows(connection, {model for model, _ in wanted})
    rows = []
    for model, version in wanted:
        row = known.get((model, version))
        if not due(row, now, recheck_s):
            continue
        outcome = _read(source, model, version)
        if outcome is not None:
            rows.append(decide(row, model, version, outcome, now))
            _log_change(row, rows[-1])
    if rows:
        connection.executemany(
            f"INSERT INTO calibrations ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (model_name, "
            "model_version) DO UPDATE SET state = excluded.state, images = excluded.images, correct = "
            "excluded.correct, note = excluded.note, manifest_sha256 = excluded.manifest_sha256, checked_at = "
            "excluded.checked_at, conflict = excluded.conflict",
            [(r.model, r.version, r.state, None if r.images is None else json.dumps(r.images),
              None if r.correct is None else json.dumps(r.correct), r.note, r.manifest_sha256, r.checked_at,
              r.conflict) for r in rows])
    return len(rows)


def _read(source: CalibrationSource, model: str, version: str) -> Outcome | None:
    try:
        return source(model, version)
    except VerificationError as error:
        return Refusal(error.message + (f" (fix: {error.fix})" if error.fix else ""))
    except EdgefleetError as error:
        log.warning("calibration table of %s %s not read, tried again at the next tick: %s", model, version,
                    error.message)
        return None


def _log_change(before: Row | None, after: Row) -> None:
    if after.conflict is not None and (before is None or before.conflict != after.conflict):
        log.error("calibration table of %s %s: %s", after.model, after.version, after.conflict)
    elif after.state == REFUSED and (before is None or before.note != after.note):
        log.warning("calibration table of %s %s refused, tried again at the next tick: %s", after.model,
                    after.version, after.note)


# --- what is shown --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shown:
    """A version's calibration as the estimate uses it: the fitted table (None: no estimate) and a note (why
    there is none, or a conflict shown beside it)."""

    table: CalibrationTable | None
    note: str | None = None


def shown(row: Row) -> Shown:
    """The table to estimate with and the note to show (pure)."""
    if row.state == REFUSED:
        return Shown(None, f"calibration table refused: {row.note}")
    if row.state != VERIFIED:
        return Shown(None, f"calibration table {UNCHECKED}")
    if row.images is None or row.correct is None:
        return Shown(None, row.note if row.conflict is None else f"{row.note}; {row.conflict}")
    try:
        return Shown(fit_counts(row.images, row.correct), row.conflict)
    except DriftError as error:
        return Shown(None, error.message)


def tables(connection: Any, versions: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Shown]:
    """(model, version) -> its table and note, for the versions that have a row."""
    wanted = set(versions)
    if not wanted:
        return {}
    rows = read_table_rows(connection, {model for model, _ in wanted})
    return {key: shown(row) for key, row in rows.items() if key in wanted}
