"""`edgefleet config ...`: configuration from the Pulumi stack, and the stack's policy checks.

- `edgefleet config from-stack OUTPUTS.json [--out-dir DIR]` reads `pulumi stack output --json` and writes
  `agent.yaml` (a fragment of the agent config: telemetry project/topic, registry uri/channel) and
  `pipeline.yaml` (registry, bucket, service accounts, telemetry names, and a `monitor:` section the fleet
  monitor reads directly), and `work-pools.yaml` (the Prefect work pools: each one's identity and service
  account, its deployments, and how to start its worker as that account; `edgefleet.infra.pools`).
- `edgefleet config check-policy PREVIEW.json` runs the policy checks of `edgefleet.infra.policy` over
  `pulumi preview --json` or `pulumi stack export` output (exit status 1 on any violation), for CI.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
import yaml

from edgefleet.infra.names import FLEET_STATE_PORT
from edgefleet.infra.outputs import StackOutputs
from edgefleet.kernel.configfile import validate
from edgefleet.kernel.console import cli_error
from edgefleet.kernel.errors import ConfigError, EdgefleetError
from edgefleet.kernel.findings import failures, print_findings

app = typer.Typer(help="Configuration from the Pulumi stack, and its policy checks.", no_args_is_help=True)

AGENT_FILE = "agent.yaml"
PIPELINE_FILE = "pipeline.yaml"
POOLS_FILE = "work-pools.yaml"
DEFAULT_CHANNEL = "stable"
EXIT_VIOLATIONS = 1
ENROLMENT_PUBLIC_KEY = "~/.edgefleet/keys/fleet-enrolment.key.pub"
"""Where the generated monitor config expects the fleet enrolment public key (it verifies the device key
records deploy-agent signs with the enrolment key; the operator puts its public half here)."""
RELEASE_KEYRING = "~/.edgefleet/keys/release.d"
"""Where the generated monitor config expects the release keyring (`edgefleet keys add`, the one deploy-agent
installs): the monitor takes a release's calibration table only from a manifest it verifies."""


def read_stack_outputs(path: Path) -> StackOutputs:
    """Reads `pulumi stack output --json` from `path`.

    Raises:
        ConfigError: naming the file, or every missing or wrong output.
    """
    fix = "in the repo root run `pulumi stack output --json > OUTPUTS.json` (after `pulumi up`)"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise ConfigError(f"stack outputs file {path} does not exist", fix) from error
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"stack outputs file {path} is not JSON ({error.msg} at line {error.lineno})", fix
        ) from error
    if not isinstance(data, dict):
        raise ConfigError(f"stack outputs file {path} is not a JSON object of outputs", fix)
    return validate(StackOutputs, data, origin=f"stack outputs file {path}",
                    fix=f"{fix}; if outputs are missing, the stack predates them: run `pulumi up` first")


def agent_config_fragment(
    outputs: StackOutputs, device_id: str | None = None, channel: str = DEFAULT_CHANNEL
) -> dict[str, Any]:
    """The part of an agent config the stack decides (`edgefleet.device.agent.config.AgentConfig` keys)."""
    fragment: dict[str, Any] = {}
    if device_id is not None:
        fragment["device_id"] = device_id
    fragment["telemetry"] = {"pubsub_project": outputs.project, "pubsub_topic": outputs.telemetry_topic}
    fragment["registry"] = {"uri": outputs.registry_uri, "channel": channel}
    return fragment


def fleet_state_store_url(outputs: StackOutputs) -> str | None:
    """The monitor's `store.url` for the stack's Cloud SQL fleet state (None without one): its IAM user (no
    password: the Auth Proxy's `--auto-iam-authn` logs in) through the proxy on 127.0.0.1."""
    if not (outputs.fleet_state_connection_name and outputs.fleet_state_database and outputs.fleet_state_user):
        return None
    user, database = quote(outputs.fleet_state_user, safe=""), quote(outputs.fleet_state_database, safe="")
    return f"postgresql://{user}@127.0.0.1:{FLEET_STATE_PORT}/{database}?sslmode=disable"


def fleet_state_proxy_command(outputs: StackOutputs) -> str:
    """How the monitor's host starts the Cloud SQL Auth Proxy, as the monitor's identity."""
    private = " --private-ip" if outputs.fleet_state_private_ip else ""
    return (f"cloud-sql-proxy --auto-iam-authn{private} --address 127.0.0.1 --port {FLEET_STATE_PORT} "
            f"{outputs.fleet_state_connection_name}")


def pipeline_config(outputs: StackOutputs) -> dict[str, Any]:
    """The release pipeline's and the operator's view of the stack (plus the fleet monitor's section)."""
    config: dict[str, Any] = {
        "project": outputs.project,
        "region": outputs.region,
        "registry": {"uri": outputs.registry_uri, "bucket": outputs.registry_bucket},
        "service_accounts": {
            "device": outputs.device_service_account,
            "pipeline": outputs.pipeline_service_account,
            "monitor": outputs.monitor_service_account,
        },
        "telemetry": {
            "topic": outputs.telemetry_topic,
            "topic_id": outputs.telemetry_topic_id,
            "schema_id": outputs.telemetry_schema_id,
            "schema_enforced": outputs.telemetry_schema_enforced,
            "monitor_subscription": outputs.monitor_subscription,
            "dead_letter_topic": outputs.dead_letter_topic,
            "dead_letter_subscription": outputs.dead_letter_subscription,
        },
        "monitor": {"project": outputs.project, "subscription": outputs.monitor_subscription,
                    "identity": {"registry": outputs.registry_uri, "enrolment_keys": [ENROLMENT_PUBLIC_KEY]},
                    "drift": {"public_key": RELEASE_KEYRING}},
        "dashboard_id": outputs.dashboard_id,
    }
    store_url = fleet_state_store_url(outputs)
    if store_url is not None:  # the monitor's state on Cloud SQL (fleetState): through the Auth Proxy
        config["monitor"]["store"] = {"url": store_url}
        config["fleet_state"] = {"connection_name": outputs.fleet_state_connection_name,
                                 "database": outputs.fleet_state_database, "user": outputs.fleet_state_user,
                                 "proxy": fleet_state_proxy_command(outputs)}
    if outputs.bigquery_table:
        config["telemetry"]["bigquery_table"] = outputs.bigquery_table
    if outputs.device_workload_identity_provider:
        config["device_workload_identity_provider"] = outputs.device_workload_identity_provider
    return config


def work_pools_config(outputs: StackOutputs) -> dict[str, Any]:
    """One Prefect work pool per identity, each started with that identity's credentials."""
    from edgefleet.infra.names import MONITOR_ACCOUNT_ROLE, PIPELINE_ACCOUNT_ROLE
    from edgefleet.infra.pools import work_pool_setup

    return {"work_pools": work_pool_setup({PIPELINE_ACCOUNT_ROLE: outputs.pipeline_service_account,
                                           MONITOR_ACCOUNT_ROLE: outputs.monitor_service_account})}


def _yaml(header: str, data: dict[str, Any]) -> str:
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    return comment + yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def _write_new(path: Path, text: str, force: bool) -> None:
    """Writes `path` atomically; refuses to replace an existing file unless `force`."""
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists", "pass --force to replace it, or choose another --out-dir")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def config_texts(outputs: StackOutputs, device_id: str | None = None, channel: str = DEFAULT_CHANNEL) -> dict[str, str]:
    """The text of `agent.yaml`, `pipeline.yaml` and `work-pools.yaml` (by file name) for these stack outputs."""
    device_note = (
        "" if device_id else "\nSet device_id per device (or EDGEFLEET_DEVICE_ID) and the model to run."
    )
    schema_note = (
        "\nThe topic validates the Avro schema: publish the Avro JSON encoding "
        "(edgefleet.kernel.contracts.telemetry.encode_telemetry)."
        if outputs.telemetry_schema_enforced
        else ""
    )
    return {
        AGENT_FILE: _yaml(
            f"edgefleet agent config from stack outputs (project {outputs.project}).{device_note}{schema_note}",
            agent_config_fragment(outputs, device_id, channel),
        ),
        PIPELINE_FILE: _yaml(
            f"edgefleet pipeline config from stack outputs (project {outputs.project}).", pipeline_config(outputs)
        ),
        POOLS_FILE: _yaml(
            f"Prefect work pools of project {outputs.project}: each worker started as its identity's service account;\n"
            "edgefleet-enrol (the enrolment key) and edgefleet-pipeline (the release key) on separate workers (run\n"
            "each pool's setup commands once; prefect.yaml maps every deployment to its pool).",
            work_pools_config(outputs),
        ),
    }


def write_configs(
    outputs: StackOutputs,
    out_dir: Path,
    device_id: str | None = None,
    channel: str = DEFAULT_CHANNEL,
    force: bool = False,
) -> tuple[Path, Path]:
    """Writes `agent.yaml`, `pipeline.yaml` and `work-pools.yaml` into `out_dir`; none is written if any exists
    (no force).

    Returns:
        The paths of the agent and pipeline files (the pools file is beside them).
    """
    paths = {name: out_dir / name for name in (AGENT_FILE, PIPELINE_FILE, POOLS_FILE)}
    if not force:
        existing = [str(path) for path in paths.values() if path.exists()]
        if existing:
            raise ConfigError(
                f"{', '.join(existing)} already exist(s)",
                "pass --force to replace, or choose another --out-dir",
            )
    for name, text in config_texts(outputs, device_id, channel).items():
        _write_new(paths[name], text, force)
    return paths[AGENT_FILE], paths[PIPELINE_FILE]


@app.command("from-stack")
def from_stack(
    outputs_file: Annotated[
        Path, typer.Argument(metavar="OUTPUTS.json", help="`pulumi stack output --json` saved to a file")
    ],
    out_dir: Annotated[Path, typer.Option(help="where agent.yaml and pipeline.yaml go")] = Path("."),
    device_id: Annotated[str | None, typer.Option(help="device id for the agent config")] = None,
    channel: Annotated[str, typer.Option(help="registry channel the agents follow")] = DEFAULT_CHANNEL,
    force: Annotated[bool, typer.Option(help="replace existing files")] = False,
) -> None:
    """Write the agent and pipeline configs from the stack outputs."""
    try:
        outputs = read_stack_outputs(outputs_file)
        agent_path, pipeline_path = write_configs(outputs, out_dir, device_id, channel, force)
    except EdgefleetError as error:
        raise cli_error(error) from error
    typer.echo(f"wrote {agent_path}, {pipeline_path} and {pipeline_path.parent / POOLS_FILE}")


@app.command("check-policy")
def check_policy(
    resources_file: Annotated[
        Path,
        typer.Argument(
            metavar="PREVIEW.json", help="`pulumi preview --json` or `pulumi stack export` output"
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help='print the findings as JSON: [{"name", "status", '
                                          '"detail", "fix"}]')] = False,
) -> None:
    """Check the stack's resources against the edgefleet policies (exit status 1 on violations)."""
    from edgefleet.infra.policy import load_resources, policy_findings

    try:
        resources = load_resources(resources_file)
    except EdgefleetError as error:
        raise cli_error(error) from error
    findings = policy_findings(resources)
    print_findings(findings, title=f"edgefleet policies: {resources_file}", as_json=as_json)
    violations = failures(findings)
    if violations:
        typer.echo(f"{len(violations)} policy violation(s) in {len(resources)} resources", err=True)
        raise typer.Exit(EXIT_VIOLATIONS)
    if not as_json:
        typer.echo(f"{len(resources)} resources comply with every policy")
