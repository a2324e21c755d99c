"""The device's one Google credentials path: `credentials_file` in the agent config.

The agent (Pub/Sub telemetry, the GCS registry in pull mode) and `edgefleet-agent doctor` read the same file, named
in the same agent.yaml, so the rollout's preflight (`doctor` over SSH, without the service's environment) sees
exactly the credentials the service uses. deploy-agent installs the file root-owned, readable by the agent's
group (0640 root:<agent group>), and a re-run replaces it atomically (rotation).

The file is what Google's libraries read (`google.auth.load_credentials_from_file`): a service-account key, or a
workload identity federation credential configuration (`external_account`, e.g. X.509 per-device certificates,
where organizations forbid service-account keys). Without `credentials_file` the clients fall back to Application
Default Credentials of the process's own environment, which a `doctor` run may not share (it says so).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from edgefleet.kernel.errors import EdgefleetError

CLOUD_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
INSTALL_FIX = ("install the device's credentials with deploy-agent (its credentials_file parameter: a "
               "service-account key or a workload identity federation credential configuration); it installs "
               "them 0640 root:<agent group> and names them in agent.yaml (credentials_file)")


class CredentialsError(EdgefleetError):
    """The device's credentials file is missing, unreadable or not Google credentials."""


def load_device_credentials(path: Path) -> Any:
    """The Google credentials in `path` (scoped for Cloud APIs).

    Raises:
        CredentialsError: naming the file and the fix (missing, not readable by this user, malformed, or an
            X.509 federation whose certificate exchange failed).
    """
    import google.auth
    from google.auth import exceptions as auth_errors
    from google.auth.credentials import Credentials

    try:
        # google-auth leaves some parameters unannotated (`request`), so the function's type is partly unknown.
        credentials = cast(Credentials, google.auth.load_credentials_from_file(  # pyright: ignore[reportUnknownMemberType]
            str(path), scopes=list(CLOUD_SCOPES))[0])
    except PermissionError as error:
        raise CredentialsError(
            f"credentials_file {path} is not readable by this user ({error.strerror})",
            f"it must be readable by the agent's group: sudo chown root:<agent group> {path} && sudo chmod 0640 "
            f"{path}, or {INSTALL_FIX}") from error
    except (auth_errors.DefaultCredentialsError, OSError, ValueError) as error:
        raise CredentialsError(f"credentials_file {path}: {error}", INSTALL_FIX) from error
    except auth_errors.GoogleAuthError as error:  # an X.509 federation config exchanges its certificate at load
        raise CredentialsError(
            f"credentials_file {path}: the token exchange failed ({type(error).__name__}: {error})",
            "check the device's network path to sts.mtls.googleapis.com, that its certificate (certificate_config) is "
            "signed by the fleet CA the workload identity provider trusts and not expired, and the provider named "
            "in the file's audience (infra/README.md, section 8)") from error
    return credentials


def principal(credentials: Any) -> str:
    """Who `credentials` act as, for humans: the service account's email, or the credential's kind."""
    email = getattr(credentials, "service_account_email", None)
    if isinstance(email, str) and email and email != "default":
        return email
    return type(credentials).__name__
