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

if TYPE_CHECKING:
    from edgefleet.device.agent.config import AgentConfig

Verdict = tuple[str, str, "str | None"]  # (ok | warn | fail, detail, fix): `doctor` makes it a Check


def credentials_problem(credentials_file: Path | None) -> EdgefleetError | None:
    """Why no Google credentials are usable: the configured file's problem, or no Application Default ones."""
    from edgefleet.device.credentials import CredentialsError, load_device_credentials

    try:
        if credentials_file is not None:
            load_device_credentials(credentials_file)
        else:
            import google.auth

            google.auth.default()
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


def credentials_verdict(config: AgentConfig) -> Verdict:
    """The device's credentials as the service uses them: `credentials_file` from agent.yaml (never this shell's
    environment, which a doctor over SSH does not share with the service)."""
    from edgefleet.device.credentials import CredentialsError, load_device_credentials, principal

    path = config.credentials_file
    if path is None:
        if not uses_google_cloud(config):
            return "ok", "no Google service to reach (local sink / local registry / emulators)", None
        return ("warn", "no credentials_file: the agent uses the Application Default Credentials of its own "
                        "environment, which this doctor run may not share",
                "install the device's credentials with deploy-agent (credentials_file), so the agent and doctor "
                "read the same file")
    try:
        credentials = load_device_credentials(path)
    except CredentialsError as error:
        return "fail", error.message, error.fix
    return "ok", f"{path}: {principal(credentials)}", None


def telemetry_verdict(config: AgentConfig) -> Verdict:
    """What the running agent's status says of its telemetry (a sink that cannot open, an outage, off)."""
    from edgefleet.kernel.contracts.status import read_status

    try:
        status = read_status(config.status_path)
    except EdgefleetError:
        return "ok", "no agent status yet (the agent has not run here)", None
    if status.state not in ("starting", "running") or status.telemetry_state in (None, "ok"):
        return "ok", (f"agent {status.state}; telemetry {status.telemetry_state or 'not reported'}, "
                      f"{status.spool_depth} message(s) in the spool"), None
    return ("warn", f"telemetry {status.telemetry_state} ({status.spool_depth} message(s) wait in the spool; "
                    f"inference goes on): {status.telemetry_error or status.last_error}"[:600],
            "see the error's own fix; messages are sent once the sink works (retried with backoff)")
