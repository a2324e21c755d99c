"""`edgefleet registry ls|show|promote|verify`: look at and move what the release pipeline published.

The registry is `--registry` (or $EDGEFLEET_REGISTRY_URI): `gs://bucket[/prefix]` or a local directory, by default
the embedded one at ~/.edgefleet/registry. `verify` checks signatures with `--public-key` (or
$EDGEFLEET_PUBLIC_KEY; by default the development key's public half when it exists).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from edgefleet.cli.registry_agent import app as agent_app
from edgefleet.cli.registry_channels import RegistryOption, add_channel_commands, open_registry
from edgefleet.kernel.console import cli_error
from edgefleet.kernel.contracts.rollout import SHARE_BP_FULL
from edgefleet.kernel.errors import EdgefleetError

if TYPE_CHECKING:
    from edgefleet.device.trust.version_bundle import SignedManifest
    from edgefleet.kernel.contracts.manifest import Manifest, Metrics

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
    from edgefleet.flows.release.params import expand
    from edgefleet.flows.trust.release_key import public_key_path
    from edgefleet.flows.trust.signing_params import DEFAULT_DEV_KEY
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


def model_rows(registry) -> list[dict]:  # noqa: ANN001 - a RegistryWriter (imported lazily)
    """`registry ls`: each model, its number of versions, the latest and what each channel points at."""
    rows = []
    for name in registry.list_models():
        versions = registry.list_versions(name)
        channels = {
            channel: pointer.version
            for channel in registry.list_channels(name)
            if (pointer := registry.read_channel(name, channel).pointer) is not None
        }
        rows.append({"model": name, "versions": len(versions), "latest": versions[-1] if versions else None,
                     "channels": channels})
    return rows


def version_rows(registry, model: str) -> list[dict]:  # noqa: ANN001 - a RegistryWriter (imported lazily)
    """`registry ls MODEL`: each version, its variants, the channels on it and its accuracy."""
    channels = _channels_by_version(registry, model)
    rows = []
    for version in registry.list_versions(model):
        manifest = registry.read_manifest(model, version).manifest
        rows.append({
            "version": version,
            "created_at": manifest.created_at.isoformat(),
            "variants": sorted(manifest.variants),
            "channels": sorted(channels.get(version, [])),
            "float_accuracy": manifest.metrics.float_accuracy,
            "int8_accuracy": manifest.metrics.int8_accuracy,
            "tpu_fraction": manifest.compiler.tpu_fraction if manifest.compiler else None,
        })
    return rows


def model_cells(row: dict) -> tuple[str, ...]:
    """A `model_rows` row as the table shows it."""
    channels = ", ".join(f"{c} -> {v}" for c, v in sorted(row["channels"].items()))
    return row["model"], str(row["versions"]), row["latest"] or "-", channels or "-"


def version_cells(row: dict) -> tuple[str, ...]:
    """A `version_rows` row as the table shows it."""
    return (row["version"], row["created_at"][:19].replace("T", " "), ", ".join(row["variants"]),
            ", ".join(row["channels"]) or "-", _percent(row["float_accuracy"]), _percent(row["int8_accuracy"]),
            _percent(row["tpu_fraction"]))


def _listing_table(model: str | None, uri: str, rows: list[dict]) -> Table:
    if model is None:
        table = Table(title=f"models in {uri}")
        columns, cells = ("model", "versions", "latest", "channels"), model_cells
    else:
        table = Table(title=f"{model} in {uri}")
        columns = ("version", "created", "variants", "channels", "float acc", "int8 acc", "ops on TPU")
        cells = version_cells
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*cells(row))
    return table


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
        rows = model_rows(registry) if model is None else version_rows(registry, model)
    except EdgefleetError as error:
        raise cli_error(error) from error
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    elif not rows:
        Console().print(f"nothing published {'for ' + model + ' ' if model else ''}in {registry.uri}")
    else:
        Console().print(_listing_table(model, registry.uri, rows))


def _size(size_bytes: int | None) -> str:
    return "-" if size_bytes is None else f"{size_bytes / KIB:.1f} KiB"


def manifest_lines(signed: SignedManifest) -> list[str]:
    """The lines `registry show` prints above the tables: the version, its manifest's hash, its input."""
    manifest, spec = signed.manifest, signed.manifest.input
    # label_count is the class ids the labels span (COCO's 80 labels: 90); releases before 2026-12-07 wrote the
    # number of labels, the same without gaps in the ids
    labels = f"class ids 0-{manifest.label_count - 1}" if manifest.label_count else "labels"
    return [
        f"[bold]{manifest.model} {manifest.version}[/] ({manifest.task}), created "
        f"{manifest.created_at:%Y-%m-%d %H:%M:%S %Z}, commit {manifest.source_commit or '-'}",
        f"manifest sha256 {signed.manifest_sha256}",
        f"input {list(spec.shape)} {spec.dtype} (scale {spec.quantization.scale:g}, zero point "
        f"{spec.quantization.zero_point}); {labels} in {manifest.labels_file}",
    ]


def compiler_lines(manifest: Manifest) -> list[str]:
    """The lines `registry show` prints below the tables: the Edge TPU compilation, the golden outputs."""
    c = manifest.compiler
    if c is None:
        lines = ["no Edge TPU variant (not compiled): devices run the CPU model"]
    else:
        lines = [f"Edge TPU: {c.operations_on_tpu}/{c.operations_total} operations on the TPU "
                 f"({c.tpu_fraction:.1%}), {c.subgraphs} subgraph(s), compiler {c.compiler_version or '-'}"]
        lines += [f"  on CPU: {op.operator} x{op.count}: {op.reason}" for op in c.cpu_operations]
    return [*lines, f"{len(manifest.golden)} golden outputs (tolerance {manifest.golden_tolerance:g})"]


def _files_table(manifest: Manifest) -> Table:
    files = Table(title="files")
    for column in ("file", "variant", "size", "sha256"):
        files.add_column(column)
    variant_of = {name: variant for variant, name in manifest.variants.items()}
    for entry in manifest.files:
        files.add_row(entry.name, variant_of.get(entry.name, "-"), _size(entry.size), entry.sha256[:16] + "...")
    return files


def _metrics_table(metrics: Metrics) -> Table:
    table = Table(title="metrics")
    for column in ("", "float32", "int8"):
        table.add_column(column)
    table.add_row("accuracy", _percent(metrics.float_accuracy), _percent(metrics.int8_accuracy))
    table.add_row("size", _size(metrics.float_size_bytes), _size(metrics.int8_size_bytes))
    return table


def print_manifest(console: Console, signed: SignedManifest) -> None:
    """What `registry show` prints of a version: its manifest's lines, files and metrics."""
    for line in manifest_lines(signed):
        console.print(line)
    console.print(_files_table(signed.manifest))
    console.print(_metrics_table(signed.manifest.metrics))
    for line in compiler_lines(signed.manifest):
        console.print(line)


@app.command()
def show(
    model: str = typer.Argument(..., help="model name"),
    version: str = typer.Argument(..., help="version, e.g. 1.0.0"),
    as_json: bool = typer.Option(False, "--json", help="print the manifest as JSON"),
    registry_uri: str = RegistryOption,
) -> None:
    """Show one version's manifest: files, input, metrics, compiler report, golden outputs."""
    try:
        signed = open_registry(registry_uri).read_manifest(model, version)
    except EdgefleetError as error:
        raise cli_error(error) from error
    if as_json:
        typer.echo(signed.raw.decode())
        return
    print_manifest(Console(), signed)


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
