"""Where a local stack's files go below its work directory: one layout for the demo's, the sandbox's and the
rollout tests' stacks (`StackSpec` and `SandboxSettings` both take it), so what one writes the other reads."""

from __future__ import annotations

from pathlib import Path


class WorkdirFiles:
    """The stack's paths, each below `workdir` (a field of the class that takes this in)."""

    workdir: Path

    @property
    def registry_dir(self) -> Path:
        return self.workdir / "registry"

    @property
    def release_key(self) -> Path:
        """The release signing key (its public half beside it, `.pub`)."""
        return self.workdir / "keys" / "release-signing.key"

    @property
    def enrolment_key(self) -> Path:
        """The fleet enrolment key (development): deploy-agent signs device key records with it, the monitor's
        identity.enrolment_keys lists its public half."""
        return self.workdir / "keys" / "fleet-enrolment.key"

    @property
    def monitor_config_path(self) -> Path:
        return self.workdir / "monitor.yaml"

    @property
    def store_path(self) -> Path:
        return self.workdir / "fleet.sqlite"

    @property
    def fleet_dir(self) -> Path:
        return self.workdir / "fleet"

    @property
    def prefect_home(self) -> Path:
        return self.workdir / "prefect"
