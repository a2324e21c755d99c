"""`edgefleet-agent verify | install | activate | rollback | models | pull`: the on-device model store.

The agent root defaults to `$EDGEFLEET_AGENT_ROOT`, else `~/.edgefleet-agent`; the release public key to
`<root>/keys/release.pub`. With `--config agent.yaml` (what the rollout passes to agents deploy-agent installed)
both come from the agent's config: the key in its root-owned config directory.
Errors print the message and its fix on stderr and exit with code 2.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, Optional, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from edgefleet.device.cli import app
from edgefleet.device.cli.options import ConfigOption, JsonOption, RootOption
from edgefleet.device.store import ModelStore
from edgefleet.device.store_reader import InstalledVersion, default_root
from edgefleet.kernel.console import ERROR_EXIT_CODE, print_error
from edgefleet.kernel.contracts.manifest import Manifest
from edgefleet.kernel.errors import EdgefleetError, VerificationError

if TYPE_CHECKING:  # pull mode loads only for `pull`
    from edgefleet.device.pull import PullResult
    from edgefleet.device.window import MaintenanceWindow

_T = TypeVar("_T")

KEY_HELP = "release public key file, PEM or base64 (default: <root>/keys/release.pub)"

KeyOption = Annotated[Optional[Path], typer.Option("--public-key", help=KEY_HELP)]
ModelArgument = Annotated[str, typer.Argument(help="model name")]


def agent_store(root: Path | None, public_key: Path | None = None, config: Path | None = None) -> ModelStore:
    """The store of the agent `config` (agent.yaml) names, its root and release key (deploy-agent's root-owned
    one; `public_key` overrides the key; the config's root wins over `root`, which $EDGEFLEET_AGENT_ROOT may set);
    without a config, the store at `root` (else the default root) and `<root>/keys/release.pub`."""
    if config is not None:
        from edgefleet.device.agent.config import load_config

        agent = run_or_exit(lambda: load_config(config))
        store = ModelStore(agent.root, public_key if public_key is not None else agent.public_key_path)
    else:
        store = ModelStore(root if root is not None else default_root(), public_key)
    run_or_exit(lambda: _check_release_key_owner(store.public_key))
    return store


def _check_release_key_owner(key: object) -> None:
    """Refuses a release key file that a user other than the caller and root can replace (e.g. the agent's own
    user, when the rollout logs in as another user and names the store by --root)."""
    if not isinstance(key, Path) or not (key.exists() or key.with_name(key.stem + ".d").exists()):
        return  # a key object, or a missing keyring: loading it says what is wrong
    from edgefleet.device.trust.anchor import ring_foreign_writable

    found = ring_foreign_writable(key, os.geteuid(), {os.getegid(), *os.getgroups()})
    if found is None:
        return
    component, owner = found
    who = f"user {owner}" if owner >= 0 else "a group or every user"
    raise VerificationError(
        f"release public key {key} is not out of other users' reach: {who} can change {component}",
        "name the agent's root-owned config (--config <config_dir>/<device id>/agent.yaml; in fleet.yaml: "
        "config_dir, as deploy-agent installs it) or a root-owned --public-key",
    )


def run_or_exit(action: Callable[[], _T]) -> _T:
    """Runs a command body; an EdgefleetError becomes its message and fix on stderr and exit code 2."""
    try:
        return action()
    except EdgefleetError as error:
        fail(error.message, error.fix)
        raise  # unreachable: fail exits


def fail(message: str | None, fix: str | None) -> NoReturn:
    """Exits with code 2, printing `message` and `fix` on stderr (None: nothing, the JSON said it)."""
    if message is not None:
        print_error(message, fix)
    raise typer.Exit(code=ERROR_EXIT_CODE)


def echo_json(payload: Any) -> None:
    typer.echo(json.dumps(payload, indent=2, default=str))


def _manifest_summary(manifest: Manifest) -> dict[str, Any]:
    return {
        "model": manifest.model,
        "version": manifest.version,
        "files": [entry.name for entry in manifest.files],
        "variants": dict(manifest.variants),
        "created_at": manifest.created_at.isoformat(),
        "source_commit": manifest.source_commit,
    }


def _installed_summary(installed: InstalledVersion | None) -> dict[str, Any] | None:
    if installed is None:
        return None
    return {
        "model": installed.model,
        "version": installed.version,
        "path": str(installed.path),
        "manifest_sha256": installed.manifest_sha256,
    }


@app.command()
def verify(
    directory: Annotated[
        Path, typer.Argument(help="a version directory (manifest.json, manifest.sig, files)")
    ],
    public_key: KeyOption = None,
    root: RootOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Verify a version directory: the manifest signature, then every file's size and sha256."""
    from edgefleet.device.trust.version_bundle import verify_version_dir

    key = public_key if public_key is not None else agent_store(root, None, config).public_key
    manifest = run_or_exit(lambda: verify_version_dir(directory, key))
    if as_json:
        echo_json(
            {
                "verified": True,
                "directory": str(directory),
                "public_key": str(key),
                **_manifest_summary(manifest),
            }
        )
    else:
        typer.echo(
            f"OK {manifest.model} {manifest.version}: signature and {len(manifest.files)} files verified "
            f"({directory})"
        )


@app.command()
def install(
    directory: Annotated[Path, typer.Argument(help="a signed version directory")],
    root: RootOption = None,
    config: ConfigOption = None,
    public_key: KeyOption = None,
    activate_after: Annotated[
        bool, typer.Option("--activate", help="make it current after installing")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Verify a version directory and install a copy into the store (pointers unchanged unless --activate)."""
    store = agent_store(root, public_key, config)

    def do() -> tuple[Manifest, InstalledVersion | None]:
        manifest = store.install(directory)
        activated = store.activate(manifest.model, manifest.version) if activate_after else None
        return manifest, activated

    manifest, activated = run_or_exit(do)
    if as_json:
        echo_json(
            {
                "installed": _manifest_summary(manifest),
                "path": str(store.version_dir(manifest.model, manifest.version)),
                "activated": activated is not None,
            }
        )
    else:
        typer.echo(
            f"installed {manifest.model} {manifest.version} in {store.root}"
            + (" and made it current" if activated else "")
        )


@app.command()
def activate(
    model: ModelArgument,
    version: Annotated[str, typer.Argument(help="an installed version")],
    root: RootOption = None,
    config: ConfigOption = None,
    public_key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Verify an installed version again and make it current (the old current becomes previous)."""
    _switch(agent_store(root, public_key, config), model, lambda store: store.activate(model, version),
            "{model}: current {current}, previous {previous}", as_json)


@app.command()
def rollback(
    model: ModelArgument,
    root: RootOption = None,
    config: ConfigOption = None,
    public_key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Make the previous version current again (the version rolled back from becomes previous)."""
    _switch(agent_store(root, public_key, config), model, lambda store: store.rollback(model),
            "{model}: rolled back to {current} (previous: {previous})", as_json)


def _switch(store: ModelStore, model: str, change: Callable[[ModelStore], InstalledVersion], text: str,
            as_json: bool) -> None:
    """Runs a pointer change on `store` and prints the pointers after it (`text` names {model}, {current},
    {previous})."""
    installed = run_or_exit(lambda: change(store))
    previous = run_or_exit(lambda: store.previous(model))
    if as_json:
        echo_json({"current": _installed_summary(installed), "previous": _installed_summary(previous)})
    else:
        typer.echo(text.format(model=model, current=installed.version,
                               previous=previous.version if previous else "none"))


@app.command()
def models(
    root: RootOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """List installed models and versions with their current and previous pointers."""
    store = agent_store(root, None, config)
    rows = run_or_exit(lambda: model_rows(store))
    if as_json:
        echo_json({"root": str(store.root), "models": rows})
    elif not rows:
        typer.echo(f"no models installed in {store.root}")
    else:
        Console().print(_models_table(store.root, rows))


def model_rows(store: ModelStore) -> list[dict[str, Any]]:
    """`models`: each installed model, its versions, pointers, floor and refused versions."""
    return [
        {
            "model": name,
            "versions": store.versions(name),
            "current": store.pointer(name, "current"),
            "previous": store.pointer(name, "previous"),
            "floor": _floor(store, name),
            "refused": [{"version": refusal.version, "reason": refusal.reason} for refusal in store.refusals(name)],
        }
        for name in store.models()
    ]


def _models_table(root: Path, rows: list[dict[str, Any]]) -> Table:
    table = Table(title=f"models in {root}")
    for column in ("model", "current", "previous", "floor", "installed versions", "refused"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["model"],
            row["current"] or "-",
            row["previous"] or "-",
            row["floor"] or "-",
            ", ".join(row["versions"]),
            ", ".join(refusal["version"] for refusal in row["refused"]) or "-",
        )
    return table


def _floor(store: ModelStore, model: str) -> str | None:
    """The model's version floor for `models` (a damaged record is shown as such, not an error here)."""
    try:
        floor = store.floor(model)
    except EdgefleetError:
        return "damaged (see edgefleet-agent pull)"
    return floor.version if floor is not None else None


_REFUSALS = ("refused", "previously_refused", "pointer_refused", "expired", "unknown_key")


@app.command()
def pull(
    registry_uri: Annotated[
        str, typer.Option("--registry", help="gs://BUCKET or gs://BUCKET/PREFIX, or a registry directory")
    ],
    model: Annotated[str, typer.Option("--model", help="model name")],
    channel: Annotated[str, typer.Option("--channel", help="channel to follow, e.g. stable")],
    root: RootOption = None,
    config: ConfigOption = None,
    public_key: KeyOption = None,
    retry_refused: Annotated[
        bool, typer.Option("--retry-refused", help="try a previously refused version again")
    ] = False,
    require_signed: Annotated[
        bool,
        typer.Option(
            "--require-signed/--allow-unsigned",
            help="refuse unsigned (schema 1) channel pointers (default); --allow-unsigned is the transition "
            "setting for registries whose pipelines do not sign yet",
        ),
    ] = True,
    device_id: Annotated[
        Optional[str],  # noqa: UP045 - typer evaluates it at run time, and devices run Python 3.9
        typer.Option("--device-id", help="this device's id, which chooses its side of a staged rollout "
                     "(default: the --config's device_id)"),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Pull once: download, verify, install and activate the version a registry channel names (inside the
    config's maintenance window, when it has one)."""
    store = agent_store(root, public_key, config)
    settings = pull_settings(config, device_id)
    result = run_or_exit(lambda: _pull_once(registry_uri, store, model, channel, settings,
                                            retry_refused=retry_refused, require_signed=require_signed))
    if as_json:
        echo_json(pull_summary(result))
    elif result.outcome not in _REFUSALS:
        typer.echo(result.reason)
    refusal = _refusal(result, registry_uri, model, channel)
    if refusal is not None:
        fail(*((None, None) if as_json else refusal))


@dataclass(frozen=True)
class PullSettings:
    """What the agent's own config adds to a pull: its credentials, device id and maintenance window."""

    credentials_file: Path | None = None  # a string annotation (PEP 563): dataclasses do not evaluate it on 3.9
    device_id: str | None = None
    window: MaintenanceWindow | None = None


def pull_settings(config: Path | None, device_id: str | None) -> PullSettings:
    """The settings of the agent `config` names (--device-id wins over its device_id); without one, none."""
    if config is None:
        return PullSettings(device_id=device_id)
    from edgefleet.device.agent.config import load_config

    agent = run_or_exit(lambda: load_config(config))
    return PullSettings(agent.credentials_file, device_id or agent.device_id, agent.registry.window)


def _pull_once(registry_uri: str, store: ModelStore, model: str, channel: str, settings: PullSettings, *,
               retry_refused: bool, require_signed: bool) -> PullResult:
    from edgefleet.device.pull import pull_channel_once
    from edgefleet.device.registry import open_registry_reader

    registry = open_registry_reader(registry_uri, credentials_file=settings.credentials_file)
    return pull_channel_once(registry, store, model, channel, retry_refused=retry_refused,
                             require_signed=require_signed, device_id=settings.device_id, window=settings.window)


def pull_summary(result: PullResult) -> dict[str, Any]:
    """`pull --json`: what changed, to which version, and why."""
    return {"changed": result.changed, "version": result.version, "outcome": result.outcome,
            "reason": result.reason, "previous": result.previous}


def _refusal(result: PullResult, registry_uri: str, model: str, channel: str) -> tuple[str, str] | None:
    """(message, fix) when the pull refused the pointer or the version, else None."""
    if result.outcome in ("pointer_refused", "expired"):
        return (
            f"the {channel} channel pointer of {model} in {registry_uri} was not followed: {result.reason}",
            "the device stays on the version it runs. An unsigned, forged or replayed pointer may be an attacker's: "
            "never re-sign it; name the version yourself with the release key (edgefleet registry promote MODEL "
            "VERSION --channel CHANNEL, --downgrade for a lower version). Only an expired pointer that verifies is "
            "renewed by re-signing (the resign-channels deployment)",
        )
    if result.outcome == "unknown_key":
        return (f"{model} {result.version} from the {channel} channel of {registry_uri} was not activated: "
                f"{result.reason}", "the device stays on the version it runs and tries again at the next pull: "
                "install the release key that signed it in the device's keyring (deploy-agent), nothing else")
    if result.outcome in ("refused", "previously_refused"):
        retry = "; after fixing the registry, pass --retry-refused" if result.outcome == "previously_refused" else ""
        return (
            f"{model} {result.version} from {registry_uri} channel {channel} was refused: {result.reason}",
            f"publish and promote a correctly signed version, or check --public-key{retry}",
        )
    return None
