"""`edgefleet spotcheck pending|import`: the labelled spot check (issue 25), the operator's side.

Devices that opt in (`spot_check.enabled` in agent.yaml) upload a sample of their frames to
`spotcheck/<device_id>/` in the registry bucket. `pending` writes the frames not labelled yet as a CSV for the
labellers (device_id, frame_id, image, and an empty label column; the model's answer is left out so it cannot
anchor the labeller); `import` reads the labelled file back and records, per device, each frame's label and
whether the model was right (`fleet/spotcheck-labels/<device_id>.json`), which `fleet status` shows beside the
estimated accuracy. Every row is checked before anything is written: with any problem nothing is imported.

Both take only samples signed by the key the fleet registered for the device whose folder they are in
(`edgefleet.monitor.spotcheck_samples`): the device key records are checked with the fleet enrolment public key
(`--enrolment-public-key`, default the monitor's `~/.edgefleet/keys/fleet-enrolment.key.pub`) and the
registry's revocations. With `--config monitor.yaml` they trust what the monitor trusts: its
`identity.enrolment_keys` and its `identity.revoked_keys` (a revocation no registry writer can remove), and read
its registry unless `--registry` names another. Any other sample is listed (`REFUSED <where>: <reason>`, on
standard error), never offered, never imported.

A compromised device signs whatever it likes with its own key, so the commands also recompute the sampler's
choice: a sample stating a share above `--share` (the fleet's `spot_check.share`, default the agent's default),
or of a frame the sampler would not pick at its share, is refused; and one listing offers (one import takes) at
most `--max-per-device` samples of a device, oldest first, the rest listed as REFUSED (the next listing offers
them), so a flooding device cannot drown the others.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from edgefleet.cli.registry import RegistryOption
from edgefleet.device.spotcheck.config import DEFAULT_MAX_PER_DAY, DEFAULT_SHARE
from edgefleet.kernel.console import cli_error
from edgefleet.kernel.errors import EdgefleetError

if TYPE_CHECKING:
    from edgefleet.flows.registry import RegistryWriter
    from edgefleet.kernel.contracts.spotcheck import SpotLabels
    from edgefleet.monitor.config import MonitorConfig
    from edgefleet.monitor.device_key_reader import KeyRecordPolicy
    from edgefleet.monitor.spotcheck_samples import RefusedSample, SampleReader

EXIT_REFUSED = 1
"""`import`'s exit status when samples were refused (the others are imported)."""
ENROLMENT_KEY_HELP = ("the fleet enrolment public key that signs device key records (repeat while it is rotated; "
                      "default: ~/.edgefleet/keys/fleet-enrolment.key.pub, as the monitor's config)")
EnrolmentPublicKeyOption = typer.Option([], "--enrolment-public-key", help=ENROLMENT_KEY_HELP)
MonitorConfigOption = typer.Option(None, "--config", "-c", help="the monitor YAML: trust its identity.enrolment_keys "
                                   "and identity.revoked_keys as the monitor does, and read its registry")

ShareOption = typer.Option(
    DEFAULT_SHARE, "--share", min=0.0, max=1.0,
    help="the share of frames the fleet's agents sample (agent.yaml spot_check.share; default the agent's "
         "default): a sample stating a higher share, or of a frame the sampler would not pick, is refused")
MaxPerDeviceOption = typer.Option(
    DEFAULT_MAX_PER_DAY, "--max-per-device", min=1,
    help="samples of one device offered (imported) per run at most, oldest first; the rest are listed as REFUSED "
         "and offered by a later run (default: one day at the agent's default spot_check.max_per_day)")

app = typer.Typer(help="The labelled spot check: frames devices sent for labelling, and their labels.",
                  no_args_is_help=True)


def _open(uri: str | None, settings: MonitorConfig | None) -> RegistryWriter:
    """The registry: `--registry`, else the monitor config's (`drift.registry`, `identity.registry`), else the
    default."""
    from edgefleet.flows.registry import open_registry_writer
    from edgefleet.flows.release.params import DEFAULT_REGISTRY
    from edgefleet.monitor.spotcheck_report import labels_registry

    return open_registry_writer(uri or (labels_registry(settings) if settings else None) or DEFAULT_REGISTRY)


def _monitor_config(path: Path | None) -> MonitorConfig | None:
    from edgefleet.monitor.config import load_monitor_config

    return load_monitor_config(path) if path is not None else None


def _enrolment_key_files(enrolment_public_keys: list[Path], settings: MonitorConfig | None) -> list[Path]:
    """--enrolment-public-key files, plus the monitor config's identity.enrolment_keys; without a config the
    default file."""
    from edgefleet.cli.config import ENROLMENT_PUBLIC_KEY
    from edgefleet.kernel.errors import ConfigError

    if settings is None:
        return enrolment_public_keys or [Path(ENROLMENT_PUBLIC_KEY)]
    paths = [*enrolment_public_keys, *(Path(path) for path in settings.identity.enrolment_keys)]
    if not paths:
        raise ConfigError("the monitor config has no identity.enrolment_keys: no device key record can be verified, "
                          "so no sample can be told from a forged one",
                          "list the fleet enrolment public key file(s) in identity.enrolment_keys (as the monitor "
                          f"needs them, e.g. {ENROLMENT_PUBLIC_KEY}) or pass --enrolment-public-key FILE")
    return paths


def key_policy(enrolment_public_keys: list[Path], settings: MonitorConfig | None) -> KeyRecordPolicy:
    """What the commands trust: the enrolment keys (`_enrolment_key_files`) and, with a monitor config, its
    `identity.revoked_keys` (the registry's revocations are read beside them); signed key records only.

    Raises:
        ConfigError: an enrolment public key file is missing or unusable (named).
    """
    from edgefleet.cli.config import ENROLMENT_PUBLIC_KEY
    from edgefleet.kernel.errors import ConfigError, VerificationError
    from edgefleet.kernel.trust.signatures import key_id, load_public_key
    from edgefleet.monitor.device_key_reader import KeyRecordPolicy

    keys = {}
    for path in _enrolment_key_files(enrolment_public_keys, settings):
        try:
            key = load_public_key(path.expanduser())
        except VerificationError as error:
            raise ConfigError(f"the fleet enrolment public key: {error.message}",
                              f"put the public half of deploy-agent's fleet enrolment key at {ENROLMENT_PUBLIC_KEY} "
                              "or pass --enrolment-public-key FILE (or list it in the monitor config's "
                              "identity.enrolment_keys): it tells which device signed a sample") from error
        keys[key_id(key)] = key
    revoked = frozenset(settings.identity.revoked_keys) if settings is not None else frozenset[str]()
    return KeyRecordPolicy(keys, revoked_keys=revoked)


def open_samples(registry_uri: str | None, enrolment_public_keys: list[Path], config: Path | None,
                 share: float) -> tuple[RegistryWriter, SampleReader]:
    """The registry and its sample reader, trusting what `key_policy` says, expecting `share`.

    Raises:
        ConfigError: the monitor config or an enrolment key is unusable (named).
    """
    from edgefleet.monitor.spotcheck_samples import SampleReader

    settings = _monitor_config(config)
    policy = key_policy(enrolment_public_keys, settings)
    registry = _open(registry_uri, settings)
    return registry, SampleReader(registry, policy, share)


def _device_option(device: str | None) -> str | None:
    from edgefleet.kernel.contracts.layout import check_name

    try:
        return check_name("device id", device) if device is not None else None
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--device") from None


def _share_option(share: float) -> float:
    if share <= 0:
        raise typer.BadParameter(f"{share:g} is no share: give the agents' spot_check.share, above 0 and at most 1",
                                 param_hint="--share")
    return share


def _print_refused(refused: tuple[RefusedSample, ...]) -> None:
    from edgefleet.monitor.spotcheck_samples import REFUSED_FIX, refusal_lines

    for line in refusal_lines(refused):
        typer.echo(line, err=True)
    if refused:
        typer.echo(f"{len(refused)} sample(s) refused, never offered or imported (fix: {REFUSED_FIX})", err=True)


def import_labels(samples: SampleReader, registry: RegistryWriter, path: Path, now: datetime,
                  max_per_device: int) -> tuple[dict[str, SpotLabels], int, tuple[RefusedSample, ...]]:
    """Checks every row of the labeller's file against the uploaded samples, then writes each device's labelled
    record (compare-and-swap on what was read). Returns (device -> its record, unlabelled rows skipped, the
    samples refused: not signed by their folder's device, left out).

    Raises:
        LabelsError: the file or a sample it names has problems (nothing written).
        ConflictError: another import wrote a device's record meanwhile (run it again: importing is idempotent).
    """
    from edgefleet.kernel.contracts.spotcheck import labels_key
    from edgefleet.monitor.spotcheck_labels import checked_labels, label_samples, merged, parse_labels

    parsed = parse_labels(path)
    labelled, refused = label_samples(samples, path, parsed.rows, max_per_device)
    records: dict[str, tuple[SpotLabels, int]] = {}
    for device_id, new in sorted(labelled.items()):  # every record read and merged before any write
        current = registry.read_json(labels_key(device_id))
        existing = (checked_labels(current.value, device_id, registry.describe(labels_key(device_id)))
                    if current.value is not None else None)
        records[device_id] = merged(existing, device_id, new, now), current.generation
    for device_id, (record, generation) in records.items():
        registry.put_json(labels_key(device_id), record, expected_generation=generation)
    return {device_id: record for device_id, (record, _) in records.items()}, parsed.unlabelled, refused


def pending_rows(samples: SampleReader, registry: RegistryWriter, device: str | None,
                 max_per_device: int) -> tuple[list[dict[str, str]], tuple[RefusedSample, ...]]:
    """The uploaded samples not labelled yet (oldest first per device, at most `max_per_device` of each), as rows
    of the labellers' CSV; and the samples refused (not signed by their folder's device, not picked by its
    sampler, over the cap: never offered)."""
    from edgefleet.kernel.contracts.layout import check_name
    from edgefleet.kernel.contracts.spotcheck import SPOTCHECK_PREFIX, check_frame_id, device_prefix, sample_keys
    from edgefleet.monitor.spotcheck_labels import read_labels
    from edgefleet.monitor.spotcheck_samples import RefusedSample, over_cap_reason

    prefix = device_prefix(device) if device is not None else f"{SPOTCHECK_PREFIX}/"
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
    refused: list[RefusedSample] = []
    for device_id, frames in sorted(found.items()):
        try:
            check_name("device id", device_id)
        except ValueError as error:  # a folder no device names (anyone with the devices' account can make one)
            refused += [RefusedSample(registry.describe(f"{SPOTCHECK_PREFIX}/{device_id}/{frame}.json"), str(error))
                        for frame in sorted(frames)]
            continue
        record = read_labels(registry, device_id)
        done = {sample.frame_id for sample in record.samples} if record else set()
        taken = 0
        for frame in sorted(set(frames) - done):
            if taken >= max_per_device:  # left unread: the next listing offers it
                refused.append(RefusedSample(registry.describe(sample_keys(device_id, frame)[1]),
                                             over_cap_reason(max_per_device)))
                continue
            sample = samples.read(device_id, frame)
            if isinstance(sample, RefusedSample):
                refused.append(sample)
            elif sample is not None:
                taken += 1
                rows.append({"device_id": device_id, "frame_id": frame,
                             "image": registry.describe(sample_keys(device_id, frame)[0]), "label": ""})
    return rows, tuple(refused)


@app.command()
def pending(
    device: str = typer.Option(None, "--device", help="only this device's samples"),
    out: Path = typer.Option(None, "--out", "-o", help="write the CSV here (default: standard output)"),
    enrolment_public_key: list[Path] = EnrolmentPublicKeyOption,
    config: Path = MonitorConfigOption,
    registry_uri: str = RegistryOption,
    share: float = ShareOption,
    max_per_device: int = MaxPerDeviceOption,
) -> None:
    """The frames devices sent that nobody labelled yet, as the labellers' CSV (fill in the label column); only
    frames signed by their device (the others are listed as REFUSED on standard error)."""
    only = _device_option(device)
    try:
        registry, samples = open_samples(registry_uri, enrolment_public_key, config, _share_option(share))
        rows, refused = pending_rows(samples, registry, only, max_per_device)
    except EdgefleetError as error:
        raise cli_error(error) from error
    _print_refused(refused)
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
    enrolment_public_key: list[Path] = EnrolmentPublicKeyOption,
    config: Path = MonitorConfigOption,
    registry_uri: str = RegistryOption,
    share: float = ShareOption,
    max_per_device: int = MaxPerDeviceOption,
) -> None:
    """Record the labels of spot-check frames: per device, the label and whether the model was right. Samples
    not signed by their device are refused (listed, not imported; exit status 1), the others imported."""
    from edgefleet.monitor.spotcheck import spot_check
    from edgefleet.monitor.spotcheck_report import RevokedKeys, counted

    try:
        registry, samples = open_samples(registry_uri, enrolment_public_key, config, _share_option(share))
        records, unlabelled, refused = import_labels(samples, registry, labels, datetime.now(UTC), max_per_device)
    except EdgefleetError as error:
        raise cli_error(error) from error
    _print_refused(refused)
    revoked = RevokedKeys(registry, samples.policy)
    for device_id, record in records.items():
        latest = record.samples[-1] if record.samples else None
        kept, left_out = counted(record.samples, revoked)  # as fleet status counts them
        result = spot_check(device_id, latest.model, latest.model_version, kept) if latest else None
        summary = (f"; {result.model_version}: {result.right}/{result.labelled} right, {result.accuracy.text()}"
                   if result else "")
        uncounted = (f" ({len(left_out)} not counted: signed by a revoked key, or recorded without its key)"
                     if left_out else "")
        typer.echo(f"{device_id}: {len(record.samples)} labelled frame(s){summary}{uncounted}")
    if unlabelled:
        typer.echo(f"{unlabelled} row(s) without a label skipped", err=True)
    if refused:
        raise typer.Exit(EXIT_REFUSED)
