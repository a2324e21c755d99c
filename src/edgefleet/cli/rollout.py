"""`edgefleet rollout run | pull | show | promote | deploy-agent`: the rollout flows from the command line.

With no Prefect server configured the flows run on Prefect's embedded ephemeral API; with one
(PREFECT_API_URL) the runs show in its UI.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from edgefleet.cli.refusals import refusals_told_once
from edgefleet.kernel.console import cli_error
from edgefleet.kernel.errors import EdgefleetError

app = typer.Typer(help="Roll model versions out to devices over SSH; promote canary; deploy the agent.",
                  no_args_is_help=True)



def _quiet_prefect() -> None:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")


VERDICT_COLUMNS = ("metric", "canary", "control", "test", "p / divergence", "threshold", "result")


def print_verdicts(record: object, console: Console | None = None) -> None:
    """Each wave's canary verdict as a table (metric, canary, control, test, p or divergence, threshold, result)."""
    console = console or Console()
    for title, rows in record.verdict_tables():  # type: ignore[attr-defined]
        table = Table(title=title, title_justify="left")
        for column in VERDICT_COLUMNS:  # metric names whole: they are what a halt names
            table.add_column(column, no_wrap=column == "metric")
        for row in rows:
            style = "red" if row["result"] == "fail" else ("dim" if row["result"] == "nodata" else None)
            table.add_row(*(row[column] for column in VERDICT_COLUMNS), style=style)
        console.print(table)


SHADOW_COLUMNS = ("metric", "result", "value", "limit", "devices")


def print_shadow(shadow: object, console: Console | None = None) -> None:
    """A pull rollout's shadow wave: its devices and each metric of its verdict (the agreement first)."""
    console = console or Console()
    table = Table(title=f"shadow wave on {', '.join(shadow.devices)} ({shadow.share_bp / 100:g}% of the fleet): "  # type: ignore[attr-defined]
                        f"{shadow.result}", title_justify="left")  # type: ignore[attr-defined]
    for column in SHADOW_COLUMNS:
        table.add_column(column, no_wrap=column == "metric")
    for row in shadow.table:  # type: ignore[attr-defined]
        table.add_row(*(row.get(column, "") for column in SHADOW_COLUMNS), style="red" if row["result"] == "fail"
                      else ("dim" if row["result"] == "nodata" else None))
    console.print(table)
    console.print(f"shadow verdict: {shadow.reason}")  # type: ignore[attr-defined]


def _print_record(record: object) -> None:
    table = Table(title=f"rollout {record.rollout_id}: {record.model} {record.version} ({record.state})")  # type: ignore[attr-defined]
    rows = record.table()  # type: ignore[attr-defined]
    for column in ("device", "wave", "state", "before", "after", "healthy_after_s", "bytes_sent", "error"):
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row[column]) for column in ("device", "wave", "state", "before", "after",
                                                          "healthy_after_s", "bytes_sent", "error")))
    Console().print(table)
    print_verdicts(record)
    progress = record.pull  # type: ignore[attr-defined]
    if progress is not None and progress.shadow is not None:
        print_shadow(progress.shadow)
    if progress is not None:
        shares = " -> ".join(f"{share / 100:g}%" for share in progress.shares) or "none yet"
        Console().print(f"pull rollout replacing {progress.replaces}: shares signed {shares}"
                        + (" -> 0% (sent back)" if progress.sent_back else ""))
    if record.halted:  # type: ignore[attr-defined]
        Console().print(f"halted in wave {record.halted.wave}: {record.halted.reason}")  # type: ignore[attr-defined]


@app.command("run")
def run(config: Path = typer.Option(..., "--config", "-c", help="rollout YAML (fields of RolloutParams)"),
        version: str = typer.Option(None, "--version", help="override the version in the config"),
        as_json: bool = typer.Option(False, "--json", help="print the result as JSON")) -> None:
    """Roll a version out in health-gated waves (re-running the same rollout resumes it)."""
    _quiet_prefect()
    from edgefleet.flows.rollout.flow import RolloutHalted, rollout
    from edgefleet.flows.rollout.params import RolloutParams, load_yaml_params

    try:
        params = load_yaml_params(RolloutParams, config, version=version)
        with refusals_told_once():
            result = rollout(params)  # type: ignore[arg-type]
    except RolloutHalted as error:
        typer.echo(error.result.model_dump_json(indent=2) if as_json else "")
        raise cli_error(error, "rollout halted") from error
    except EdgefleetError as error:
        raise cli_error(error, "rollout failed") from error
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
    else:
        typer.echo(f"rollout {result.rollout_id}: {result.state}, {result.done} devices done; "
                   f"record {result.record_uri}")


@app.command("pull")
def pull(config: Path = typer.Option(..., "--config", "-c", help="pull rollout YAML (fields of PullRolloutParams)"),
         as_json: bool = typer.Option(False, "--json", help="print the result as JSON")) -> None:
    """Roll a version out to pull-mode devices by signed, judged shares of the channel (re-running resumes)."""
    _quiet_prefect()
    from edgefleet.flows.rollout.flow import RolloutHalted
    from edgefleet.flows.rollout.params import load_yaml_params
    from edgefleet.flows.rollout.pull_flow import pull_rollout
    from edgefleet.flows.rollout.pull_params import PullRolloutParams

    try:
        result = pull_rollout(load_yaml_params(PullRolloutParams, config))  # type: ignore[arg-type]
    except RolloutHalted as error:
        typer.echo(error.result.model_dump_json(indent=2) if as_json else "")
        raise cli_error(error, "rollout halted") from error
    except EdgefleetError as error:
        raise cli_error(error, "rollout failed") from error
    typer.echo(result.model_dump_json(indent=2) if as_json else
               f"rollout {result.rollout_id}: {result.state}, {result.done} devices on {result.version}; "
               f"record {result.record_uri}")


@app.command("show")
def show(rollout_id: str = typer.Argument(..., help="rollout id (default ids are <model>-<version>)"),
         registry: str = typer.Option(..., "--registry",
                                     help="gs://BUCKET or gs://BUCKET/PREFIX, or a registry directory"),
         as_json: bool = typer.Option(False, "--json")) -> None:
    """Show a rollout record: per device before/after, steps, timings, errors."""
    from edgefleet.flows.registry import open_registry_writer
    from edgefleet.flows.rollout.record import RecordStore

    try:
        record = RecordStore(open_registry_writer(registry), rollout_id).load()
    except EdgefleetError as error:
        raise cli_error(error, "cannot read the rollout") from error
    if record is None:
        raise cli_error(EdgefleetError(f"no rollout {rollout_id} in {registry}",
                                       "list the registry's rollouts/ (ids are <model>-<version> by default)"))
    if as_json:
        typer.echo(json.dumps(record.model_dump(mode="json"), indent=2))
    else:
        _print_record(record)


@app.command("promote")
def promote(config: Path = typer.Option(..., "--config", "-c", help="YAML with the fields of PromotionParams")) -> None:
    """Promote canary to stable if the canary devices were healthy long enough (otherwise say why)."""
    _quiet_prefect()
    from edgefleet.flows.rollout.params import PromotionParams, load_yaml_params
    from edgefleet.flows.rollout.promote import promote_canary

    try:
        with refusals_told_once():
            result = promote_canary(load_yaml_params(PromotionParams, config))  # type: ignore[arg-type]
    except EdgefleetError as error:
        raise cli_error(error, "promotion failed") from error
    typer.echo(result.reason)


@app.command("deploy-agent")
def deploy_agent_command(config: Path = typer.Option(..., "--config", "-c",
                                                     help="YAML with the fields of DeployAgentParams")) -> None:
    """Install the device agent on devices and (re)start it as a service."""
    _quiet_prefect()
    from edgefleet.flows.deploy_agent.flow import DeployAgentParams, deploy_agent
    from edgefleet.flows.rollout.params import load_yaml_params

    try:
        with refusals_told_once():
            results = deploy_agent(load_yaml_params(DeployAgentParams, config))  # type: ignore[arg-type]
    except EdgefleetError as error:
        raise cli_error(error, "deploy-agent failed") from error
    for result in results:
        typer.echo(f"{result.device_id}: {result.detail}")
