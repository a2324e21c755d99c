"""`doctor`'s checks of what the agent reaches: the registry (and its channel pointer, judged as the agent
would: `edgefleet.device.doctor.pointer`), Pub/Sub, the credentials the service uses and what the running agent
says of its telemetry (`edgefleet.device.doctor.credentials`)."""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING

from edgefleet.device.doctor.report import DoctorLimits, ok
from edgefleet.kernel.errors import EdgefleetError
from edgefleet.kernel.findings import Finding, Status

if TYPE_CHECKING:
    from edgefleet.device.agent.config import AgentConfig


def check_registry(config: AgentConfig, limits: DoctorLimits) -> Finding:
    if not config.registry.uri:
        return ok("registry", "push mode: no registry to reach (rollouts bring the versions)")
    from edgefleet.device.registry import RegistryOptions, open_registry_reader

    try:
        registry = open_registry_reader(config.registry.uri, credentials_file=config.credentials_file,
                                        options=RegistryOptions(request_timeout_s=limits.connect_timeout_s,
                                                                retry_deadline_s=limits.connect_timeout_s))
        state = registry.read_channel(config.model, config.registry.channel)
    except EdgefleetError as error:
        return Finding(name="registry", status=Status.FAIL, detail=error.message, fix=error.fix)
    except Exception as error:  # noqa: BLE001 - credentials, DNS, HTTP: all "not reachable" for the user
        return Finding(name="registry", status=Status.FAIL,
                       detail=f"{config.registry.uri}: {type(error).__name__}: {error}"[:400],
                       fix="check the network and the device's credentials (credentials_file in agent.yaml)")
    where = f"{config.registry.uri} reachable; {config.model}/{config.registry.channel}"
    if state.pointer is None:
        return ok("registry", f"{where}: no pointer yet")
    from edgefleet.device.doctor.pointer import pointer_check

    status, detail, fix = pointer_check(config, state.pointer, source=registry.uri)
    return Finding(name="registry", status=status, detail=f"{where}: {detail}", fix=fix)


def _endpoint_reachable(host: str, port: int, timeout_s: float) -> str | None:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except OSError as error:
        return f"{host}:{port}: {error}"


def check_pubsub(config: AgentConfig, limits: DoctorLimits) -> Finding:
    telemetry = config.telemetry
    if not telemetry.pubsub_project:
        return ok("pubsub", "telemetry goes to a local file (no pubsub_project)")
    emulator = os.environ.get("PUBSUB_EMULATOR_HOST")
    if emulator:
        host, _, port = emulator.rpartition(":")
        where = (host, int(port))
    else:
        where = ("pubsub.googleapis.com", 443)
        from edgefleet.device.doctor.credentials import credentials_problem

        problem = credentials_problem(config.credentials_file)
        if problem is not None:
            return Finding(name="pubsub", status=Status.FAIL, detail=problem.message[:400], fix=problem.fix)
    problem = _endpoint_reachable(*where, limits.connect_timeout_s)
    if problem:
        return Finding(name="pubsub", status=Status.FAIL, detail=f"Pub/Sub not reachable: {problem}",
                       fix="check the network (telemetry waits in the spool meanwhile)")
    return ok("pubsub", f"{where[0]}:{where[1]} reachable, topic {telemetry.pubsub_project}/"
                         f"{telemetry.pubsub_topic}")


def check_credentials(config: AgentConfig) -> Finding:
    """`credentials_file` from agent.yaml, as the service reads it (`edgefleet.device.doctor.credentials`)."""
    from edgefleet.device.doctor.credentials import credentials_finding

    return credentials_finding(config)


def check_telemetry(config: AgentConfig) -> Finding:
    """What the running agent's status says of its telemetry (never blocking)."""
    from edgefleet.device.doctor.credentials import telemetry_finding

    return telemetry_finding(config)
