"""deploy-agent's part of the device's one credentials path (issue 22): the Google credentials file.

The file (`credentials_file`: a service-account key, or a workload identity federation configuration where the
organization forbids keys) is read on the flow's machine and checked before any device is touched; on the
device it is `<config_dir>/<device id>/google-credentials.json`, root's, readable by the agent's group only
(0640 root:<agent group>), named in agent.yaml's `credentials_file`, so the agent and `doctor` (the rollout's
preflight, over SSH, without the service's environment) read the same file. A re-run installs the new file
beside the old one and renames it over it: a reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

from edgefleet.flows.deploy_agent.params import DEVICE_ID_FIELD
from edgefleet.flows.fleet.connection import DeviceShell
from edgefleet.kernel.errors import ConfigError

# What google.auth.load_credentials_from_file reads for a machine. A person's gcloud login (`authorized_user`)
# is refused: it must never be copied to devices.
MACHINE_CREDENTIAL_TYPES = frozenset({"service_account", "external_account", "impersonated_service_account"})
CREDENTIALS_MODE = 0o640


def credentials_source(template: str, device_id: str) -> Path:
    """The local credentials file of `device_id` (`{device_id}` in `template` replaced; `~` expanded)."""
    return Path(os.path.expandvars(template.replace(DEVICE_ID_FIELD, device_id))).expanduser()


def credentials_text(template: str, device_id: str) -> str:
    """The credentials file's text for `device_id`, checked to be machine Google credentials.

    Raises:
        ConfigError: unreadable, not JSON, or not a machine credential (a person's login, say).
    """
    path = credentials_source(template, device_id)
    fix = ("give credentials_file as the device's service-account key (gcloud iam service-accounts keys create) or "
           "workload identity federation configuration (gcloud iam workload-identity-pools create-cred-config); "
           f"'{DEVICE_ID_FIELD}' in it names one file per device")
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"credentials_file {path} (device {device_id}) cannot be read ({error.strerror})",
                          fix) from error
    try:
        kind = json.loads(text).get("type")
    except (ValueError, AttributeError):
        raise ConfigError(f"credentials_file {path} is not a Google credentials file (not a JSON object)",
                          fix) from None
    if kind not in MACHINE_CREDENTIAL_TYPES:
        raise ConfigError(f"credentials_file {path} holds {kind!r} credentials, not a machine's "
                          f"({', '.join(sorted(MACHINE_CREDENTIAL_TYPES))}); a person's login never goes to devices",
                          fix)
    return text


def install_credentials_command(staged: str, target: str, reader: str) -> str:
    """Makes `staged` root's, readable by `reader`'s group (0640), and renames it over `target` (atomic)."""
    q = shlex.quote
    return (f"chown root:\"$(id -gn {q(reader)})\" {q(staged)} && chmod {CREDENTIALS_MODE:o} {q(staged)} && "
            f"mv -f {q(staged)} {q(target)}")


def install_credentials(connection: DeviceShell, target: str, text: str, reader: str) -> None:
    """Installs (or rotates) the credentials at `target` for the agent running as `reader`."""
    staged = f"{target}.new"
    connection.write_text(staged, text, mode=0o600)  # root's and private until it is complete
    connection.run(install_credentials_command(staged, target, reader))
