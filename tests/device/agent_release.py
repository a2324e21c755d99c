"""A tiny but real agent release for the updater tests: a wheel built here (an `edgefleet-agent` console
script that writes the agent's status.json the way the agent does, its boot clock included, `running` or
`failed` as baked in), an empty
hashed lock named for this Python and CPU, published and promoted with real release keys in a real registry
directory. Installing it makes a real venv with the real pip (offline)."""

from __future__ import annotations

import base64
import hashlib
import platform
import sys
import zipfile
from datetime import datetime, timezone
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgefleet.device.registry.local import LocalRegistryReader
from edgefleet.device.selfupdate import UpdaterConfig
from edgefleet.flows.registry import LocalRegistryWriter
from edgefleet.flows.release.agent import promote_agent, publish_agent
from edgefleet.kernel.contracts.agent_release import lock_name
from edgefleet.kernel.trust.signatures import generate_keypair, save_public_key

_AGENT = '''import json, os, sys, time
from datetime import datetime, timezone

def main():
    now = datetime.now(timezone.utc).isoformat()
    with open("/proc/sys/kernel/random/boot_id") as boot:  # the boot clock, as the agent stamps its status
        clock = {{"boot_id": boot.read().strip(), "started_s": time.monotonic(), "updated_s": time.monotonic()}}
    status = {{"schema": 3, "device_id": "cam-1", "pid": os.getpid(), "state": "{state}", "started_at": now,
              "updated_at": now, "version": "{version}", "boot": clock}}
    with open(os.environ["FAKE_AGENT_STATUS"], "w") as handle:
        json.dump(status, handle)
'''


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode().rstrip("=")
    return f"{name},sha256={digest},{len(data)}"


def build_wheel(directory: Path, version: str, state: str) -> Path:
    """edgefleet-<version>-py3-none-any.whl whose `edgefleet-agent` writes a `state` status and exits."""
    info = f"edgefleet-{version}.dist-info"
    files = {
        "edgefleet_fake_agent.py": _AGENT.format(state=state, version=version).encode(),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: edgefleet\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{info}/entry_points.txt": b"[console_scripts]\nedgefleet-agent = edgefleet_fake_agent:main\n",
    }
    record = "\n".join([*(_record_line(name, data) for name, data in files.items()), f"{info}/RECORD,,"]) + "\n"
    path = directory / f"edgefleet-{version}-py3-none-any.whl"
    directory.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
        wheel.writestr(f"{info}/RECORD", record)
    return path


class AgentReleases:
    """A registry, a release key, and a device install dir with its updater config."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.registry = LocalRegistryWriter(root / "registry", create=True)
        self.device_view = LocalRegistryReader(self.registry.root)
        self.release_key, public = generate_keypair()
        self.public_key = save_public_key(public, root / "release.pub")
        self.install_dir = root / "install"
        self.install_dir.mkdir()
        self.status_file = root / "agent-root" / "status.json"
        self.status_file.parent.mkdir()
        lock = root / "locks" / lock_name(f"{sys.version_info[0]}.{sys.version_info[1]}", platform.machine())
        lock.parent.mkdir()
        lock.write_text("# no dependencies: the test wheel needs none\n")
        self.locks = [lock]

    def release(self, version: str, state: str = "running", *, key: Ed25519PrivateKey | None = None,
                promote: bool = True) -> Path:
        wheel = build_wheel(self.root / "wheels" / version, version, state)
        publish_agent(self.registry, wheel, version, signing_key=key or self.release_key, locks=self.locks)
        if promote:
            promote_agent(self.registry, version, "stable", signing_key=key or self.release_key, by="test",
                          now=datetime.now(timezone.utc))
        return wheel

    def config(self, **changes: object) -> UpdaterConfig:
        restart = (str(self.install_dir / "current" / "bin" / "edgefleet-agent"),)
        settings = {"install_dir": self.install_dir, "status_file": self.status_file,
                    "registry": str(self.registry.root), "public_key": self.public_key,
                    "restart_command": restart, "python": sys.executable, "health_timeout_s": 600.0}
        return UpdaterConfig(**(settings | changes))
