"""A registry directory with calibrated releases, what a bucket writer does to it, and a fleet state that ran them:
the helpers of the calibration table attack tests (issue 25's review finding)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgefleet.device.trust.version_bundle import read_signed_manifest
from edgefleet.flows.registry import LocalRegistryWriter
from edgefleet.flows.release.bundle import write_signed_version
from edgefleet.kernel.contracts import distributions as d
from edgefleet.kernel.contracts.layout import MANIFEST_FILE, SIGNATURE_FILE, version_prefix
from edgefleet.kernel.contracts.manifest import Calibration, Manifest, SigningInfo
from edgefleet.kernel.trust.signatures import encode_signature, key_id, sign
from edgefleet.monitor.ingest import apply
from edgefleet.monitor.store import FleetStore, commit, to_epoch
from tests.device.store_fixtures import VersionFactory
from tests.monitor.monitor_helpers import T0, telemetry

MODEL = "mobilenet"  # what `telemetry` reports
HONEST = Calibration(images=(100,) * d.SCORE_BUCKETS,
                     correct=tuple(95 if index >= 15 else 40 for index in range(d.SCORE_BUCKETS)))
"""The release's table: right 95% of the time at scores >= 0.75, 40% below."""
INFLATED = Calibration(images=(100,) * d.SCORE_BUCKETS, correct=(100,) * d.SCORE_BUCKETS)
"""A forger's table: every answer right, whatever the score (every device's estimate near 1.0)."""
MINUTES = 3


def publish_calibrated(registry: LocalRegistryWriter, make_version: VersionFactory, private_key: Ed25519PrivateKey,
                       version: str, calibration: Calibration = HONEST, *, development: bool = False) -> str:
    """Publishes `version` of MODEL with `calibration`, signed (and named in `signing`) by `private_key`, as the
    release flow writes it; its manifest's sha256."""
    directory = make_version(MODEL, version, private_key=private_key)
    manifest = read_signed_manifest(directory).manifest.with_calibration(calibration)
    manifest = manifest.model_copy(update={"signing": SigningInfo(key_id=key_id(private_key.public_key()),
                                                                   development=development)})
    signed = write_signed_version(directory, manifest, private_key)
    registry.publish_version(MODEL, version, directory)
    return signed.manifest_sha256


def rewrite_manifest(registry_root: Path, version: str, calibration: Calibration, *,
                     sign_with: Ed25519PrivateKey | None = None, development: bool | None = None) -> None:
    """What anyone who can write the registry bucket can do: replace the version's manifest.json with one whose
    table is `calibration` (the old manifest.sig left in place, or a signature by `sign_with`, a key of theirs)."""
    prefix = registry_root / version_prefix(MODEL, version)
    manifest = Manifest.model_validate_json((prefix / MANIFEST_FILE).read_bytes())
    update = {"schema": "edgefleet.manifest/3", "calibration": calibration.model_dump()}
    if sign_with is not None:
        update["signing"] = {"key_id": key_id(sign_with.public_key()),
                             "development": bool(development)}
    forged = Manifest.model_validate({**manifest.model_dump(by_alias=True), **update})
    raw = forged.to_json_bytes()
    (prefix / MANIFEST_FILE).write_bytes(raw)
    if sign_with is not None:
        (prefix / SIGNATURE_FILE).write_bytes(encode_signature(sign(sign_with, raw)))


def copy_version(registry_root: Path, version: str, to_version: str) -> None:
    """Copies a published version's objects under another version's name (a replay of a signed manifest)."""
    source, dest = registry_root / version_prefix(MODEL, version), registry_root / version_prefix(MODEL, to_version)
    dest.mkdir(parents=True)
    for entry in source.iterdir():
        (dest / entry.name).write_bytes(entry.read_bytes())


def run_version(store: FleetStore, device_id: str, version: str, first_minute: int = 0) -> float:
    """A device reporting `version` for a few count buckets (confident answers); the epoch time after them."""
    rng = np.random.default_rng(7)
    for minute in range(first_minute, first_minute + MINUTES):
        scores = np.clip(rng.normal(0.85, 0.05, 100), 0, 0.999)
        dist = d.build(latency={5: 100}, classes={0: 60, 1: 40},
                       score=dict(zip(*np.unique((scores * d.SCORE_BUCKETS).astype(int), return_counts=True),
                                      strict=True)))
        message = telemetry(device_id, minute + 1, at=T0 + timedelta(minutes=minute), version=version, count=100)
        apply(store, message.model_copy(update={"inference": message.inference.model_copy(update={"dist": dist})}))
    commit(store)
    return to_epoch(T0 + timedelta(minutes=first_minute + MINUTES + 1))


def stored_tables(store: FleetStore) -> dict[tuple[str, str], tuple[int, ...] | None]:
    """(model, version) -> the `correct` counts the fleet state holds (None: no table)."""
    import json

    return {(model, version): None if correct is None else tuple(json.loads(correct))
            for model, version, correct in store.connection.execute(
                "SELECT model_name, model_version, correct FROM calibrations")}
