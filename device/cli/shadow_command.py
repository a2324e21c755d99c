"""`edgefleet-agent shadow MODEL [VERSION | --clear | --show]`: the candidate the agent runs beside the current
model (issue 25, `edgefleet.device.agent.shadow`). The version must be installed first (`edgefleet-agent install`
without --activate); it is verified as an activation would verify it. The agent runs it only with a
`shadow.share` above 0 in its config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from edgefleet.device.cli import app
from edgefleet.device.cli.options import ConfigOption, JsonOption, RootOption
from edgefleet.device.cli.store_commands import ModelArgument, _echo_json, _fail, _run, _store


def _report(root: Path) -> dict | None:
    from edgefleet.device.agent.shadow_stats import SHADOW_REPORT_FILE

    path = root / SHADOW_REPORT_FILE
    return json.loads(path.read_text()) if path.is_file() else None


@app.command()
def shadow(
    model: ModelArgument,
    version: Annotated[Optional[str], typer.Argument(help="an installed version to run as the shadow")] = None,  # noqa: UP045 - typer on Python 3.9
    clear: Annotated[bool, typer.Option("--clear", help="stop shadowing: remove the shadow pointer")] = False,
    root: RootOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Name an installed version as the shadow candidate (run beside `current` on a share of the frames, never
    acted on), remove it with --clear, or show the agent's shadow report."""
    from edgefleet.device.agent.shadow import clear_shadow, set_shadow, shadow_version

    store = _store(root, None, config)
    if clear and version is not None:
        _fail("give a VERSION or --clear, not both",
              "edgefleet-agent shadow MODEL VERSION, or edgefleet-agent shadow MODEL --clear")
    if clear:
        removed = _run(lambda: clear_shadow(store, model))
        payload = {"model": model, "shadow": None, "cleared": removed}
    elif version is not None:
        installed = _run(lambda: set_shadow(store, model, version))
        payload = {"model": model, "shadow": installed.version, "manifest_sha256": installed.manifest_sha256}
    else:
        named = _run(lambda: shadow_version(store, model))
        payload = {"model": model, "shadow": named.version if named else None, "report": _report(store.root)}
    if as_json:
        _echo_json(payload)
    else:
        typer.echo(f"{model}: shadow {payload['shadow'] or 'none'}")

