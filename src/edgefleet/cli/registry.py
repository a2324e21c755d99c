"""`edgefleet registry ls|show|promote|verify`: look at and move what the release pipeline published.

The registry is `--registry` (or $EDGEFLEET_REGISTRY_URI): `gs://bucket[/prefix]` or a local directory, by default
the embedded one at ~/.edgefleet/registry. `verify` checks signatures with `--public-key` (or
$EDGEFLEET_PUBLIC_KEY; by default the development key's public half when it exists).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from edgefleet.cli.registry_agent import app as agent_app
from edgefleet.cli.registry_channels import RegistryOption, add_channel_commands, open_registry
from edgefleet.kernel.console import cli_error
from edgefleet.kernel.contracts.rollout import SHARE_BP_FULL
from edgefleet.kernel.errors import EdgefleetError

app = typer.Typer(
    help="The model registry: list, inspect, promote and verify published versions.", no_args_is_help=True
)
stderr = Console(stderr=True)

KIB = 1024.0


VerifyKeyOption = typer.Option(
    None,
    "--public-key",
    envvar="EDGEFLEET_PUBLIC_KEY",
    help="release public key (default: the development key's .pub)",
)



def _public_key(option: Path | None) -> Path:
    from edgefleet.flows.release.params import DEFAULT_DEV_KEY, expand
    from edgefleet.flows.trust.release_key import public_key_path
    from edgefleet.kernel.errors import ConfigError

    if option is not None:
        return option
    dev_public = public_key_path(expand(DEFAULT_DEV_KEY))
    if dev_public.is_file():
        return dev_public
    raise ConfigError(
        "no public key to verify with",
        "pass --public-key FILE (or set EDGEFLEET_PUBLIC_KEY) with the release public key",
    )


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _channels_by_version(registry, model: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for channel in registry.list_channels(model):
        pointer = registry.read_channel(model, channel).pointer
        if pointer is None:
            continue
        stage = pointer.rollout
        if stage is not None and stage.share_bp < SHARE_BP_FULL:  # a staged rollout: a share on each version
            found.setdefault(pointer.version, []).append(f"{channel} ({stage.share_bp / 100:g}%)")
            found.setdefault(stage.replaces, []).append(f"{channel} ({100 - stage.share_bp / 100:g}%)")
        else:
            found.setdefault(pointer.version, []).append(channel)
    return found


WarnWithinOption = typer.Option(
    3.0, "--warn-within-days", envvar="EDGEFLEET_POINTER_WARN_DAYS", min=0.0,
    help="warn about channel pointers expiring within this many days (the resign-channels schedule renews them)",
)


def _warn_expiring(registry, within_days: float) -> None:
    """On stderr: each channel pointer expiring within `within_days`, and how to renew it."""
    from datetime import UTC, datetime, timedelta

    from edgefleet.flows.channels.expiry import RESIGN_FIX, registry_expiry_warnings

    warnings = registry_expiry_warnings(registry, datetime.now(UTC), timedelta(days=within_days))
    for warning in warnings:
        stderr.print(f"warning: {warning.message()}", markup=False, highlight=False)
    if warnings:
        stderr.print(f"fix: {RESIGN_FIX}", markup=False, highlight=False)


@app.command("ls")
def list_(
    model: str = typer.Argument(None, help="list this model's versions (default: list the models)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
    registry_uri: str = RegistryOption,
    warn_within_days: float = WarnWithinOption,
) -> None:
    """List the models, or the versions of MODEL with their channels and accuracy; warn about channel pointers
    about to expire."""
    try:
        registry = open_registry(registry_uri)
        _warn_expiring(registry, warn_within_days)
        if model is None:
            rows = []
            for name in registry.list_models():
                versions = registry.list_versions(name)
                channels = {
                    channel: pointer.version
                    for channel in registry.list_channels(name)
                    if (pointer := registry.read_channel(name, channel).pointer) is not None
                }
                rows.append(
                    {
                        "model": name,
                        "versions": len(versions),
                        "latest": versions[-1] if versions else None,
                        "channels": channels,
                    }
                )
        else:
            channels = _channels_by_version(registry, model)
            rows = []
            for version in registry.list_versions(model):
                manifest = registry.read_manifest(model, version).manifest
                rows.append(
                    {
                        "version": version,
                        "created_at": manifest.created_at.isoformat(),
                        "variants": sorted(manifest.variants),
                        "channels": sorted(channels.get(version, [])),
                        "float_accuracy": manifest.metrics.float_accuracy,
                        "int8_accuracy": manifest.metrics.int8_accuracy,
                        "tpu_fraction": manifest.compiler.tpu_fraction if manifest.compiler else None,
                    }
                )
    except EdgefleetError as error:
        raise cli_error(error) from error
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    console = Console()
    if model is None:
        table = Table(title=f"models in {registry.uri}")
        for column in ("model", "versions", "latest", "channels"):
            table.add_column(column)
        for row in rows:
            table.add_row(
                row["model"],
                str(row["versions"]),
                row["latest"] or "-",
                ", ".join(f"{c} -> {v}" for c, v in sorted(row["channels"].items())) or "-",
            )
    else:
        table = Table(title=f"{model} in {registry.uri}")
        for column in ("version", "created", "variants", "channels", "float acc", "int8 acc", "ops on TPU"):
            table.add_column(column)
        for row in rows:
            table.add_row(
                row["version"],
                row["created_at"][:19].replace("T", " "),
                ", ".join(row["variants"]),
                ", ".join(row["channels"]) or "-",
                _percent(row["float_accuracy"]),
                _percent(row["int8_accuracy"]),
                _percent(row["tpu_fraction"]),
            )
    if not rows:
        console.print(f"nothing published {'for ' + model + ' ' if model else ''}in {registry.uri}")
        return
    console.print(table)


@app.command()
def show(
    model: str = typer.Argument(..., help="model name"),
    version: str = typer.Argument(..., help="version, e.g. 1.0.0"),
    as_json: bool = typer.Option(False, "--json", help="print the manifest as JSON"),
    registry_uri: str = RegistryOption,
) -> None:
    """Show one version's manifest: files, input, metrics, compiler report, golden outputs."""
    try:
        registry = open_registry(registry_uri)
        signed = registry.read_manifest(model, version)
    except EdgefleetError as error:
        raise cli_error(error) from error
    manifest = signed.manifest
    if as_json:
        typer.echo(signed.raw.decode())
        return
    console = Console()
    console.print(
        f"[bold]{manifest.model} {manifest.version}[/] ({manifest.task}), created "
        f"{manifest.created_at:%Y-%m-%d %H:%M:%S %Z}, commit {manifest.source_commit or '-'}"
    )
    console.print(f"manifest sha256 {signed.manifest_sha256}")
    spec = manifest.input
    console.print(
        f"input {list(spec.shape)} {spec.dtype} (scale {spec.quantization.scale:g}, zero point "
        f"{spec.quantization.zero_point}); {manifest.label_count} labels in {manifest.labels_file}"
    )
    files = Table(title="files")
    for column in ("file", "variant", "size", "sha256"):
        files.add_column(column)
    variant_of = {name: variant for variant, name in manifest.variants.items()}
    for entry in manifest.files:
        files.add_row(
            entry.name,
            variant_of.get(entry.name, "-"),
            f"{entry.size / KIB:.1f} KiB",
            entry.sha256[:16] + "...",
        )
    console.print(files)
    m = manifest.metrics
    metrics = Table(title="metrics")
    for column in ("", "float32", "int8"):
        metrics.add_column(column)
    metrics.add_row("accuracy", _percent(m.float_accuracy), _percent(m.int8_accuracy))
    metrics.add_row(
        "size",
        "-" if m.float_size_bytes is None else f"{m.float_size_bytes / KIB:.1f} KiB",
        "-" if m.int8_size_bytes is None else f"{m.int8_size_bytes / KIB:.1f} KiB",
    )
    console.print(metrics)
    if manifest.compiler is None:
        console.print("no Edge TPU variant (not compiled): devices run the CPU model")
    else:
        c = manifest.compiler
        console.print(
            f"Edge TPU: {c.operations_on_tpu}/{c.operations_total} operations on the TPU "
            f"({c.tpu_fraction:.1%}), {c.subgraphs} subgraph(s), compiler {c.compiler_version or '-'}"
        )
        for op in c.cpu_operations:
            console.print(f"  on CPU: {op.operator} x{op.count}: {op.reason}")
    console.print(f"{len(manifest.golden)} golden outputs (tolerance {manifest.golden_tolerance:g})")


@app.command()
def verify(
    model: str = typer.Argument(..., help="model name"),
    version: str = typer.Argument(..., help="version to verify"),
    public_key: Path = VerifyKeyOption,
    registry_uri: str = RegistryOption,
) -> None:
    """Download VERSION and check its signature and every file, as a device would."""
    try:
        registry = open_registry(registry_uri)
        key = _public_key(public_key)
        manifest = registry.verify_version(model, version, key)
    except EdgefleetError as error:
        raise cli_error(error) from error
    typer.echo(
        f"OK: {model} {version} verifies against {key}: signature and {len(manifest.files)} files "
        f"({', '.join(entry.name for entry in manifest.files)})"
    )

add_channel_commands(app)  # promote, resign, convert-unsigned (edgefleet.cli.registry_channels)
app.add_typer(agent_app, name="agent")  # the agent's own releases (edgefleet.cli.registry_agent)
