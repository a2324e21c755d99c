"""`edgefleet fleet enrol-token create` and `edgefleet fleet enrol-approve`: enrolment without inbound SSH.

The operator mints a one-time token per device (its hash, signed by the fleet enrolment key, goes to
`fleet/enrol-tokens/`; the token text is printed once); the device runs `edgefleet-agent enrol --token-file F`;
`enrol-approve` (by hand, or on a schedule) judges the requests and writes the signed device key records
(`edgefleet.flows.trust.enrolment_tokens`).
"""

from __future__ import annotations

import getpass
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import typer

from edgefleet.cli.fleet_keys import AllowDevKeyOption, EnrolmentBlockOption, EnrolmentKeyOption, open_registry
from edgefleet.cli.registry import RegistryOption
from edgefleet.kernel.console import cli_error
from edgefleet.kernel.errors import EdgefleetError

token_app = typer.Typer(help="One-time enrolment tokens: a device enrols with one, without inbound SSH.",
                        no_args_is_help=True)

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_DURATION = re.compile(r"(\d{1,6})([smhd])")


def parse_lifetime(text: str) -> timedelta:
    """`30m`, `24h`, `7d` as a timedelta.

    Raises:
        typer.BadParameter: anything else.
    """
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise typer.BadParameter(f"--expires {text!r} is not a duration: use e.g. 30m, 24h or 7d")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def _key(enrolment_key, secret_block, allow_dev, registry_uri):
    from edgefleet.cli.fleet_keys import _enrolment_key

    return _enrolment_key(enrolment_key, secret_block, allow_dev, registry_uri)


@token_app.command("create")
def create(
    device_ids: list[str] = typer.Argument(..., help="the devices (one token each)"),
    expires: str = typer.Option("24h", "--expires", help="how long the tokens stay usable (30m, 24h, 7d; at "
                                "most 30 days)"),
    replace: bool = typer.Option(False, "--replace", help="the device may replace the key it is enrolled with "
                                 "(a re-imaged device); its old key is revoked"),
    enrolment_key: Path = EnrolmentKeyOption,
    enrolment_secret_block: str = EnrolmentBlockOption,
    allow_development_key: bool = AllowDevKeyOption,
    registry_uri: str = RegistryOption,
) -> None:
    """Mint a one-time enrolment token per DEVICE_ID. Each token is printed once (`DEVICE_ID TOKEN`): hand it
    to that device only (`edgefleet-agent enrol --token-file FILE`); the registry keeps only its hash."""
    from edgefleet.flows.trust.enrolment_tokens import create_token

    lifetime = parse_lifetime(expires)
    by = f"edgefleet fleet enrol-token create ({getpass.getuser()})"
    try:
        registry = open_registry(registry_uri)
        key = _key(enrolment_key, enrolment_secret_block, allow_development_key, registry.uri)
        now = datetime.now(UTC)
        for device_id in device_ids:
            text, record = create_token(registry, device_id, enrolment_key=key, now=now, lifetime=lifetime, by=by,
                                        replace=replace)
            typer.echo(f"{device_id} {text}")
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    except EdgefleetError as error:
        raise cli_error(error) from error
    typer.echo(f"valid until {record.expires_at:%Y-%m-%d %H:%M} UTC; approve the requests with "
               "`edgefleet fleet enrol-approve`", err=True)


def enrol_approve(
    enrolment_key: Path = EnrolmentKeyOption,
    enrolment_secret_block: str = EnrolmentBlockOption,
    allow_development_key: bool = AllowDevKeyOption,
    registry_uri: str = RegistryOption,
) -> None:
    """Judge the devices' enrolment requests; enrol each device whose request carries its unused, unexpired
    token (the token is burnt), refuse the rest (printed with why). Safe to repeat, and to run on a schedule."""
    from edgefleet.flows.trust.enrolment_tokens import approve_requests

    try:
        registry = open_registry(registry_uri)
        key = _key(enrolment_key, enrolment_secret_block, allow_development_key, registry.uri)
        approvals = approve_requests(registry, enrolment_key=key, now=datetime.now(UTC))
    except EdgefleetError as error:
        raise cli_error(error) from error
    for approval in approvals:
        verdict = approval.verdict
        typer.echo(f"{'ENROLLED' if approval.enrolled else 'not enrolled'}  token {verdict.token_id}: "
                   f"{approval.detail}")
        for name, why in verdict.refused:
            typer.echo(f"  refused request {name}: {why}")
    typer.echo(f"{sum(a.enrolled for a in approvals)} enrolled, {len(approvals)} tokens with requests")
