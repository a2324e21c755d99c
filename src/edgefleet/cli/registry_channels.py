"""`edgefleet registry promote|resign|convert-unsigned`: the channel moves, each signed by the release key.

- `promote` points a channel at a version (compare-and-swap). A pointer in the channel that does not verify
  (forged, out of the contract's bounds) is refused, or replaced with `--replace-unverified`.
- `resign` renews pointers that verify (new counter and expiry); unsigned ones are reported, never signed.
- `convert-unsigned` signs one unsigned (schema 1) pointer after showing what it names, and only a version a
  signed pointer named before (`edgefleet.flows.trust.convert_unsigned`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from edgefleet.kernel.console import cli_error
from edgefleet.kernel.contracts.manifest import MAX_POINTER_VALIDITY_DAYS, ChannelPointer
from edgefleet.kernel.errors import EdgefleetError

if TYPE_CHECKING:
    from types import EllipsisType

    from edgefleet.flows.trust.pointer_readback import CheckedChannel


def _default_registry() -> str:
    from edgefleet.flows.release.params import DEFAULT_REGISTRY

    return DEFAULT_REGISTRY


RegistryOption = typer.Option(
    None,
    "--registry",
    "-r",
    envvar="EDGEFLEET_REGISTRY_URI",
    help="gs://bucket/prefix (prefix optional) or a local directory (default ~/.edgefleet/registry)",
)


def open_registry(uri: str | None):  # -> RegistryWriter (imported lazily: the CLI starts fast)
    from edgefleet.flows.registry import open_registry_writer

    return open_registry_writer(uri or _default_registry())


SigningKeyOption = typer.Option(
    None,
    "--signing-key",
    envvar="EDGEFLEET_SIGNING_KEY",
    help="the release signing key (PEM) that signs the channel pointer (default: the development key, "
    "local registries only)",
)
SigningBlockOption = typer.Option(
    None, "--signing-secret-block", help="a Prefect Secret block holding the release signing key"
)
AllowDevKeyOption = typer.Option(
    False, "--allow-development-key", help="let the development key sign for a gs:// registry (test buckets)"
)
ValidityOption = typer.Option(14.0, "--valid-days", min=0.0, max=float(MAX_POINTER_VALIDITY_DAYS),
                              help="how long the signed pointer is valid (agents refuse longer)")
PromoteKeyOption = typer.Option(
    None,
    "--public-key",
    envvar="EDGEFLEET_PUBLIC_KEY",
    help="verify the manifest signature with this key first",
)


def release_signing_key(key_file: Path | None, secret_block: str | None, allow_dev: bool, registry_uri: str):
    from edgefleet.flows.trust.release_key import channel_signing_key
    from edgefleet.flows.trust.signing_params import SigningParams

    params = SigningParams(
        key_file=str(key_file) if key_file else None, secret_block=secret_block, allow_development_key=allow_dev
    )
    return channel_signing_key(params, registry_uri)


def signing_registry(registry_uri: str | None, key_file: Path | None, secret_block: str | None, allow_dev: bool):
    """(the registry of --registry, the release signing key of --signing-key / --signing-secret-block /
    --allow-development-key for it): what every command that signs opens first."""
    registry = open_registry(registry_uri)
    return registry, release_signing_key(key_file, secret_block, allow_dev, registry.uri)


def echo_resign_results(results) -> None:  # noqa: ANN001 - ResignResult of the trust packages (imported lazily)
    """One line a channel re-signed (or left, or failed); exit code 2 when one failed."""
    for result in results:
        typer.echo(f"{result.model}/{result.channel}: {result.outcome} {result.detail}")
    if any(result.outcome == "failed" for result in results):
        raise typer.Exit(code=2)


def promote(
    model: str = typer.Argument(..., help="model name"),
    version: str = typer.Argument(..., help="the published version to point the channel at"),
    channel: str = typer.Option(..., "--channel", "-c", help="channel to move, e.g. canary or stable"),
    expect: str = typer.Option(
        None,
        "--expect",
        help="only if the channel names this version now ('none': only if it does not exist yet)",
    ),
    public_key: Path = PromoteKeyOption,
    signing_key: Path = SigningKeyOption,
    signing_secret_block: str = SigningBlockOption,
    allow_development_key: bool = AllowDevKeyOption,
    downgrade: bool = typer.Option(
        False, "--downgrade", help="a deliberate move to a lower version (devices refuse one otherwise)"
    ),
    unsigned: bool = typer.Option(
        False, "--unsigned", help="write an unsigned schema 1 pointer (only for agents not upgraded yet)"
    ),
    replace_unverified: bool = typer.Option(
        False,
        "--replace-unverified",
        help="overwrite a channel pointer that does not verify (forged, or out of the contract's bounds); it is "
        "treated as absent, never as the base of the counter",
    ),
    valid_days: float = ValidityOption,
    registry_uri: str = RegistryOption,
) -> None:
    """Point CHANNEL at VERSION with a pointer signed by the release key (compare-and-swap: a concurrent change
    is reported, never overwritten; a pointer that does not verify is refused unless --replace-unverified)."""
    import getpass
    from datetime import timedelta

    try:
        registry = open_registry(registry_uri)
        key = None
        if not unsigned:
            key = release_signing_key(signing_key, signing_secret_block, allow_development_key, registry.uri)
        check_with = key.public_key() if key is not None else public_key
        before = registry.read_channel_checked(model, channel, check_with) if check_with is not None else None
        pointer = registry.promote(
            model, version, channel, by=f"edgefleet registry promote ({getpass.getuser()})",
            expected_version=expected_version(expect), public_key=public_key, signing_key=key, downgrade=downgrade,
            validity=timedelta(days=valid_days), replace_unverified=replace_unverified,
        )
    except EdgefleetError as error:
        raise cli_error(error) from error
    typer.echo(promotion_line(before, pointer))


def expected_version(expect: str | None) -> str | None | EllipsisType:
    """`--expect` as `RegistryWriter.promote` takes it: ... (not given: whatever the channel names), None for
    'none' (the channel must not exist yet), else the version."""
    if expect is None:
        return ...
    return None if expect.lower() == "none" else expect


def promotion_line(before: CheckedChannel | None, pointer: ChannelPointer) -> str:
    """What `promote` prints: the channel's move from what it named (`before`, as checked) to `pointer`."""
    was = before.pointer.version if before is not None and before.pointer is not None else "nothing"
    if before is not None and before.untrusted:
        was = f"a pointer that {before.problem} (replaced)"
    signed = f"signed, counter {pointer.counter}" if pointer.signed else "UNSIGNED"
    return (f"{pointer.model} channel {pointer.channel}: {was} -> {pointer.version} (manifest "
            f"{pointer.manifest_sha256[:16]}..., {signed}{', downgrade' if pointer.downgrade else ''})")


def resign(
    model: str = typer.Argument(None, help="model name (default: every model)"),
    channel: str = typer.Option(None, "--channel", "-c", help="one channel (default: every channel)"),
    signing_key: Path = SigningKeyOption,
    signing_secret_block: str = SigningBlockOption,
    allow_development_key: bool = AllowDevKeyOption,
    valid_days: float = ValidityOption,
    renew_within_days: float = typer.Option(
        None, "--renew-within-days", min=0.0, help="only pointers expiring within this many days"
    ),
    registry_uri: str = RegistryOption,
) -> None:
    """Re-sign channel pointers that verify, with a new counter and expiry. Unsigned pointers are reported and
    left as they are (convert one with `convert-unsigned`)."""
    from datetime import timedelta

    from edgefleet.flows.trust.resign_channels import resign_channels

    try:
        registry, key = signing_registry(registry_uri, signing_key, signing_secret_block, allow_development_key)
        results = resign_channels(
            registry,
            key,
            models=[model] if model else None,
            channels=[channel] if channel else None,
            validity=timedelta(days=valid_days),
            renew_within=None if renew_within_days is None else timedelta(days=renew_within_days),
        )
    except EdgefleetError as error:
        raise cli_error(error) from error
    echo_resign_results(results)


def convert_unsigned(
    model: str = typer.Argument(..., help="model name"),
    channel: str = typer.Option(..., "--channel", "-c", help="the channel whose unsigned pointer to sign"),
    yes: bool = typer.Option(False, "--yes", help="sign without asking (what is signed is still printed)"),
    signing_key: Path = SigningKeyOption,
    signing_secret_block: str = SigningBlockOption,
    allow_development_key: bool = AllowDevKeyOption,
    valid_days: float = ValidityOption,
    registry_uri: str = RegistryOption,
) -> None:
    """Sign CHANNEL's unsigned (schema 1) pointer as it is: shows the model, channel, version and manifest sha256
    first, and refuses a version no signed pointer ever named (promote that one yourself instead)."""
    import getpass
    from datetime import timedelta

    from edgefleet.flows.trust.convert_unsigned import convert_unsigned as convert
    from edgefleet.flows.trust.convert_unsigned import plan_conversion

    try:
        registry, key = signing_registry(registry_uri, signing_key, signing_secret_block, allow_development_key)
        plan = plan_conversion(registry, model, channel, key)
    except EdgefleetError as error:
        raise cli_error(error) from error
    for line in plan.lines():
        typer.echo(line)
    if not yes and not typer.confirm("sign it?", default=False):
        typer.echo("nothing signed")
        raise typer.Exit(code=1)
    try:
        pointer = convert(registry, plan, key, validity=timedelta(days=valid_days),
                          by=f"edgefleet registry convert-unsigned ({getpass.getuser()})")
    except EdgefleetError as error:
        raise cli_error(error) from error
    typer.echo(f"{model} channel {channel}: {pointer.version} signed, counter {pointer.counter}")


def add_channel_commands(app: typer.Typer) -> None:
    """Adds promote, resign and convert-unsigned to the `edgefleet registry` group."""
    app.command()(promote)
    app.command()(resign)
    app.command("convert-unsigned")(convert_unsigned)
