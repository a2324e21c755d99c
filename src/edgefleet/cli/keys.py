"""`edgefleet keys list|add|resign|retire`: the release keyring, and rotating the release key without stopping a
device (`edgefleet.flows.trust.key_rotation`).

    edgefleet keys add RING OLD.pub            # once: a keyring directory holding today's key
    edgefleet keys add RING NEW.pub            # 1. add the new key; deploy-agent with public_key: RING
    edgefleet keys resign --ring RING --signing-key NEW.key   # 2. re-sign pointers and manifests in use
    edgefleet keys retire RING OLD_KEY_ID      # 3. refused while anything in use needs the old key
"""

from __future__ import annotations

from pathlib import Path

import typer

from edgefleet.cli.registry_channels import (
    AllowDevKeyOption,
    RegistryOption,
    SigningBlockOption,
    SigningKeyOption,
    ValidityOption,
    echo_resign_results,
    open_registry,
    release_signing_key,
)
from edgefleet.kernel.console import cli_error
from edgefleet.kernel.errors import EdgefleetError

app = typer.Typer(help="The release keyring: list, add, re-sign with a new key, retire the old one.",
                  no_args_is_help=True)

RingArgument = typer.Argument(..., help="the keyring directory (one <key id>.pub per release public key)")


@app.command("list")
def list_(ring: Path = RingArgument) -> None:
    """Show each key file of RING with its key id (a file not named by its key id is not trusted)."""
    from edgefleet.flows.trust.key_rotation import describe_ring_files

    rows = describe_ring_files(ring)
    if not rows:
        typer.echo(f"{ring}: no .pub files")
    for name, detail in rows:
        typer.echo(f"{name}  {detail}")


@app.command()
def add(ring: Path = RingArgument,
        public_key: Path = typer.Argument(..., help="a release public key file (PEM or base64)")) -> None:
    """Add a release public key to RING as <key id>.pub (step 1; then deploy-agent with public_key: RING)."""
    from edgefleet.flows.trust.key_rotation import add_key

    try:
        path = add_key(ring, public_key)
    except EdgefleetError as error:
        raise cli_error(error) from error
    typer.echo(f"added {path}; install the keyring on every device (deploy-agent with public_key: {ring}) and "
               "in the pipelines' public_key settings before signing with the key")


@app.command()
def resign(
    ring: Path = typer.Option(..., "--ring", help="the keyring: the old and the new release public key"),
    signing_key: Path = SigningKeyOption,
    signing_secret_block: str = SigningBlockOption,
    allow_development_key: bool = AllowDevKeyOption,
    valid_days: float = ValidityOption,
    registry_uri: str = RegistryOption,
) -> None:
    """Step 2: re-sign every channel pointer that verifies with RING by the new signing key, and add its
    signature to the manifest each names (the manifest's bytes, and so its sha256, stay); the agent's channels
    (agent/channels/) and the agent manifests they name too, shown as agent/<channel>."""
    import getpass
    from datetime import timedelta

    from edgefleet.flows.trust.key_rotation import resign_in_use
    from edgefleet.kernel.trust.release_keyring import load_keyring

    try:
        registry = open_registry(registry_uri)
        keyring = load_keyring(ring)  # read between the two (a wrong ring is named before a missing key)
        key = release_signing_key(signing_key, signing_secret_block, allow_development_key, registry.uri)
        results = resign_in_use(registry, keyring, key, validity=timedelta(days=valid_days),
                                by=f"edgefleet keys resign ({getpass.getuser()})")
    except EdgefleetError as error:
        raise cli_error(error) from error
    echo_resign_results(results)


@app.command()
def retire(
    ring: Path = RingArgument,
    key_id: str = typer.Argument(..., help="the id of the key to retire (edgefleet keys list RING)"),
    registry_uri: str = RegistryOption,
) -> None:
    """Step 3: remove KEY_ID from RING, refused while a channel pointer or a manifest it names (a model's or the
    agent's own) verifies with that key only (re-sign first); then deploy-agent the keyring to remove it from the
    devices."""
    from edgefleet.flows.trust.key_rotation import retire_key_file, retirement_blockers
    from edgefleet.kernel.errors import ConfigError
    from edgefleet.kernel.trust.release_keyring import load_keyring

    try:
        blockers = retirement_blockers(open_registry(registry_uri), load_keyring(ring), key_id)
        if blockers:
            raise ConfigError(f"key {key_id} still verifies what is in use: {'; '.join(blockers)}",
                              f"re-sign with the new key first (edgefleet keys resign --ring {ring} --signing-key "
                              "NEW.key), then retire")
        path = retire_key_file(ring, key_id)
    except EdgefleetError as error:
        raise cli_error(error) from error
    typer.echo(f"removed {path}; deploy-agent with public_key: {ring} removes it from the devices")
