"""`edgefleet fleet keys list|sign|revoke`: the device key records (`fleet/devices/<id>.json`) in the registry.

`sign` is how a fleet enrolled before signed records (schema 2) moves on: it shows every unsigned record and signs
only after the operator checked them (`--yes` skips the question, for scripts that showed them already).
"""

from __future__ import annotations

import getpass
from pathlib import Path

import typer

from edgefleet.cli.registry import RegistryOption
from edgefleet.kernel.console import cli_error
from edgefleet.kernel.errors import EdgefleetError

app = typer.Typer(help="Device key records: list them, sign unsigned ones, revoke a device's key.",
                  no_args_is_help=True)

EnrolmentKeyOption = typer.Option(
    None, "--enrolment-key", envvar="EDGEFLEET_ENROLMENT_KEY",
    help="the fleet enrolment key (PEM) that signs device key records (default: the development key, local "
    "registries only)")
EnrolmentBlockOption = typer.Option(None, "--enrolment-secret-block",
                                    help="a Prefect Secret block holding the fleet enrolment key")
AllowDevKeyOption = typer.Option(False, "--allow-development-key",
                                 help="let the development enrolment key sign for a gs:// registry (test buckets)")


def open_registry(uri: str | None):
    from edgefleet.flows.registry import open_registry_writer
    from edgefleet.flows.release.params import DEFAULT_REGISTRY

    return open_registry_writer(uri or DEFAULT_REGISTRY)


def _enrolment_key(key_file: Path | None, secret_block: str | None, allow_dev: bool, registry_uri: str):
    from edgefleet.flows.trust.device_key_records import EnrolmentKeyParams, resolve_enrolment_key

    params = EnrolmentKeyParams(key_file=str(key_file) if key_file else None, secret_block=secret_block,
                                allow_development_key=allow_dev)
    return resolve_enrolment_key(params, registry_uri=registry_uri, create=False)


@app.command("list")
def list_(
    enrolment_public_key: list[Path] = typer.Option(
        [], "--enrolment-public-key", help="check signatures against this enrolment public key (repeat to rotate)"),
    registry_uri: str = RegistryOption,
) -> None:
    """Every device key record, and whether a monitor with these enrolment keys trusts it."""
    from edgefleet.kernel.trust.signatures import key_id, load_public_key
    from edgefleet.monitor.device_key_reader import KeyRecordPolicy, load_fleet_keys

    try:
        keys = {key_id(key): key for key in map(load_public_key, enrolment_public_key)}
        result = load_fleet_keys(open_registry(registry_uri), KeyRecordPolicy(keys))
    except EdgefleetError as error:
        raise cli_error(error) from error
    for device_id, key in sorted(result.keys.items()):
        typer.echo(f"trusted  {device_id}  key {key_id(key)}")
    for refused in result.refused:
        typer.echo(f"REFUSED  {refused.record}: {refused.reason} (fix: {refused.fix})")
    typer.echo(f"{len(result.keys)} trusted, {len(result.refused)} refused, {len(result.revoked)} revoked keys")


@app.command()
def sign(
    yes: bool = typer.Option(False, "--yes", help="sign without asking (the records are still shown)"),
    enrolment_key: Path = EnrolmentKeyOption,
    enrolment_secret_block: str = EnrolmentBlockOption,
    allow_development_key: bool = AllowDevKeyOption,
    registry_uri: str = RegistryOption,
) -> None:
    """Sign the unsigned (edgefleet.device-key/1) records, after showing them: check that each device and key
    is yours (a registry writer could have added one) before answering yes."""
    from edgefleet.flows.trust.device_key_records import sign_records, unsigned_records

    try:
        registry = open_registry(registry_uri)
        pending, skipped = unsigned_records(registry)
        for record_key, reason in skipped:
            typer.echo(f"NOT SIGNED  {record_key}: {reason}")
        for item in pending:
            record = item.record
            by = "".join(c if c.isprintable() else "?" for c in record.added_by or "?")  # anyone could write it
            typer.echo(f"unsigned    {record.device_id}  key {record.key_id}  added {record.added_at:%Y-%m-%d %H:%M} "
                       f"by {by}")
        if not pending:
            typer.echo("no unsigned record to sign")
            return
        if not yes and not typer.confirm(f"sign these {len(pending)} records with the fleet enrolment key?"):
            raise typer.Exit(code=1)
        key = _enrolment_key(enrolment_key, enrolment_secret_block, allow_development_key, registry.uri)
        signed = sign_records(registry, pending, enrolment_key=key)
    except EdgefleetError as error:
        raise cli_error(error) from error
    typer.echo(f"signed {len(signed)} records")


@app.command()
def revoke(
    device_id: str = typer.Argument(..., help="the device whose current key is revoked"),
    reason: str = typer.Option("", "--reason", help="why (kept in the revocation)"),
    key_id: str = typer.Option("", "--key-id", help="revoke this key id (a device whose record is damaged or gone)"),
    enrolment_key: Path = EnrolmentKeyOption,
    enrolment_secret_block: str = EnrolmentBlockOption,
    allow_development_key: bool = AllowDevKeyOption,
    registry_uri: str = RegistryOption,
) -> None:
    """Revoke DEVICE_ID's key: every monitor refuses its telemetry from its next key refresh. To keep the
    revocation even if a registry writer removes it, also list the key id in the monitor's identity.revoked_keys."""
    from edgefleet.flows.trust.device_key_records import revoke_device, revoke_key

    by = f"edgefleet fleet keys revoke ({getpass.getuser()})"
    try:
        registry = open_registry(registry_uri)
        key = _enrolment_key(enrolment_key, enrolment_secret_block, allow_development_key, registry.uri)
        revocation = (revoke_key(registry, key_id, device_id, enrolment_key=key, by=by, reason=reason) if key_id
                      else revoke_device(registry, device_id, enrolment_key=key, by=by, reason=reason))
    except EdgefleetError as error:
        raise cli_error(error) from error
    typer.echo(f"revoked key {revocation.key_id} of {device_id}; add it to identity.revoked_keys of the monitor "
               "for a revocation no registry writer can undo")
