"""`doctor`'s credentials and telemetry checks: what the service itself uses and says.

The credentials are `credentials_file` from agent.yaml, never this shell's environment: the rollout's preflight
runs `doctor` over SSH (through sudo), without the service's environment, and must see what the service sees.
Telemetry is what the running agent's status says (a sink that cannot open, an outage, off): never blocking.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from edgefleet.kernel.errors import EdgefleetError
from edgefleet.kernel.findings import Finding, Status

if TYPE_CHECKING:
    from edgefleet.device.agent.config import AgentConfig

CREDENTIALS_CHECK = "credentials"
TELEMETRY_CHECK = "telemetry"


def credentials_problem(credentials_file: Path | None) -> EdgefleetError | None:
    """Why no Google credentials are usable: the configured file's problem, or no Application Default ones."""
    from edgefleet.device.credentials import CredentialsError, load_device_credentials

    try:
        if credentials_file is not None:
            load_device_credentials(credentials_file)
        else:
            import google.auth

            # google-auth leaves its credentials' type unannotated; only whether they resolve matters here.
            google.auth.default()  # pyright: ignore[reportUnknownMemberType]
    except CredentialsError as error:
        return error
    except Exception as error:  # noqa: BLE001 - DefaultCredentialsError and friends
        return EdgefleetError(f"no Google credentials: {error}", "set credentials_file in agent.yaml (deploy-agent "
                              "installs it; the agent and doctor read the same file)")
    return None


def uses_google_cloud(config: AgentConfig) -> bool:
    """Pub/Sub telemetry or a gs:// registry without their emulators: Google credentials are needed."""
    pubsub = bool(config.telemetry.pubsub_project) and not os.environ.get("PUBSUB_EMULATOR_HOST")
    gcs = str(config.registry.uri or "").startswith("gs://") and not os.environ.get("STORAGE_EMULATOR_HOST")
    return pubsub or gcs


def credentials_finding(config: AgentConfig) -> Finding:
    """The device's credentials as the service uses them: `credentials_file` from agent.yaml (never this shell's
    environment, which a doctor over SSH does not share with the service)."""
    from edgefleet.device.credentials import CredentialsError, load_device_credentials, principal

    path = config.credentials_file
    if path is None:
        if not uses_google_cloud(config):
            return Finding(name=CREDENTIALS_CHECK, status=Status.OK,
                           detail="no Google service to reach (local sink / local registry / emulators)")
        return Finding(name=CREDENTIALS_CHECK, status=Status.WARN,
                       detail="no credentials_file: the agent uses the Application Default Credentials of its own "
                              "environment, which this doctor run may not share",
                       fix="install the device's credentials with deploy-agent (credentials_file), so the agent and "
                           "doctor read the same file")
    try:
        credentials = load_device_credentials(path)
    except CredentialsError as error:
        return Finding(name=CREDENTIALS_CHECK, status=Status.FAIL, detail=error.message, fix=error.fix)
    return Finding(name=CREDENTIALS_CHECK, status=Status.OK, detail=f"{path}: {principal(credentials)}")


def telemetry_finding(config: AgentConfig) -> Finding:
    """What the running agent's status says of its telemetry (a sink that cannot open, an outage, off)."""
    from edgefleet.kernel.contracts.status import read_status

    try:
        status = read_status(config.status_path)
    except EdgefleetError:
        return Finding(name=TELEMETRY_CHECK, status=Status.OK,
                       detail="no agent status yet (the agent has not run here)")
    if status.state not in ("starting", "running") or status.telemetry_state in (None, "ok"):
        return Finding(name=TELEMETRY_CHECK, status=Status.OK,
                       detail=f"agent {status.state}; telemetry {status.telemetry_state or 'not reported'}, "
                              f"{status.spool_depth} message(s) in the spool")
    return Finding(name=TELEMETRY_CHECK, status=Status.WARN,
                   detail=f"telemetry {status.telemetry_state} ({status.spool_depth} message(s) wait in the spool; "
                          f"inference goes on): {status.telemetry_error or status.last_error}"[:600],
                   fix="see the error's own fix; messages are sent once the sink works (retried with backoff)")
