"""`edgefleet-agent self-update`: the agent upgraded by pulling, beside the running one, with rollback.

Run as root by a systemd timer (a oneshot beside the agent's service, never by the agent's own user: the agent
must not be able to replace its own code). One run (`run_once`):
1. a switch is pending (`selfupdate_plan.Pending`): judge the started agent's health from its status.json
   (`selfupdate_plan.health`, on the boot's monotonic clock: NTP steps of the wall clock change nothing; a
   reboot restarts the wait) until healthy or the deadline; the new agent said `failed` -> `current` back to the
   previous target, restart, the release refused from then on; the wait ran out -> the same rollback, the
   release retried at a later run and refused once `max_attempts` attempts timed out;
2. otherwise read `agent/channels/<channel>.json`, judge it with the models' channel rules (signature by the
   release keyring, counter, expiry, version floor: `edgefleet.device.trust.pointers.assess_pointer`), and on `install`:
   verify the manifest (sha256 the pointer names, a signature with the agent domain by the keyring key it names:
   `edgefleet.device.trust.agent_signatures`), download the wheel and this device's lock (sha256 and size checked),
   make `<install_dir>/versions/<v>/venv`
   (`pip --require-hashes` lock, then the wheel alone), write the pending switch, move `current` atomically
   (a new symlink renamed over it), restart the service, and judge as in 1.

`public_key` is the device's release keyring (`keys/release.d/`, what deploy-agent installs) or a single key
file (older installs). A pointer or manifest signed only by a key the keyring does not hold is `waiting`: nothing
changes and nothing is refused for good, the next run tries again (the key may not be installed yet).

The service runs `<install_dir>/current/bin/edgefleet-agent` (`current` -> `venv`, deploy-agent's, before the
first self-update; -> `versions/<v>/venv` after). Decisions are pure (`edgefleet.device.selfupdate_plan`).
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgefleet.device.registry.base import RegistryReader
from edgefleet.device.selfupdate_plan import (
    CURRENT_LINK,
    DEFAULT_MAX_ATTEMPTS,
    LEGACY_VENV,
    STATE_FILE,
    Moment,
    Pending,
    UpdaterState,
    after_health,
    decide,
    health,
    resumed,
    version_target,
)
from edgefleet.device.trust.agent_signatures import check_agent_signatures, keyed_agent_signatures
from edgefleet.device.trust.pointers import accepted, assess_pointer, verify_pointer, version_identity
from edgefleet.kernel.contracts.agent_release import (
    AGENT_MANIFEST_FILE,
    AGENT_POINTER_MODEL,
    AGENT_SIGNATURE_FILE,
    MAX_AGENT_MANIFEST_BYTES,
    AgentManifest,
    agent_channel_key,
    agent_file_key,
)
from edgefleet.kernel.contracts.manifest import ChannelPointer, FileEntry
from edgefleet.kernel.contracts.names import ChannelName
from edgefleet.kernel.contracts.status import BOOT_ID_FILE, AgentStatus, parse_status, read_boot_id
from edgefleet.kernel.errors import EdgefleetError, VerificationError
from edgefleet.kernel.fsutil import atomic_write_bytes, read_regular, switch_symlink
from edgefleet.kernel.trust.release_keyring import Keyring, KeyringLike, UnknownKeyError, add_key_fix, load_keyring

Runner = Callable[[Sequence[str], float], None]
MAX_SIGNATURE_BYTES = 4096
"""Room for a few `<key id> <base64>` lines (revision 2, one per release key while it rotates)."""
MAX_POINTER_BYTES = 8192
MAX_STATUS_BYTES = 64 * 1024
"""A status.json larger than this is no status (real ones are about 1 KB)."""


class UpdaterConfig(BaseModel):
    """Where the agent is installed and how its service restarts (read once, from the updater's YAML)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    install_dir: Path = Field(description="deploy-agent's install_dir (root's): venv, versions/, current")
    status_file: Path = Field(description="the agent's status.json (<agent root>/status.json: the file, or the "
                              "agent's link to its copy in its runtime directory; read as a bounded regular file)")
    registry: str = Field(description="the registry (gs://bucket[/prefix] or a directory)")
    public_key: Path = Field(description="the release keyring: the keys/release.d directory deploy-agent installs "
                             "(root-owned), or a single release public key file (older installs)")
    channel: ChannelName = "stable"
    credentials_file: Path | None = Field(
        default=None, description="the device's Google credentials for a gs:// registry: the agent's own "
        "credentials_file (deploy-agent writes the same path); None: Application Default Credentials")
    restart_command: tuple[str, ...] = Field(description="e.g. [systemctl, restart, edgefleet-agent]")
    python: str = Field(default="python3", description="the Python that makes the new venvs")
    wheelhouse: Path | None = Field(default=None, description="install offline from this directory")
    extra_site_dirs: tuple[Path, ...] = Field(default=(), description="directories added to the new venv's path "
                                              "(a .pth file), as deploy-agent's: air-gapped devices, tests")
    health_timeout_s: float = Field(default=300.0, gt=0, description="how long the new agent has to run")
    max_attempts: int = Field(default=DEFAULT_MAX_ATTEMPTS, ge=1, description="attempts of one release whose "
                              "wait ran out (or waits a reboot restarted) before it is refused for good")
    status_fresh_s: float = Field(default=60.0, gt=0, description="a running status older than this is stale")
    poll_s: float = Field(default=2.0, gt=0, description="how often status.json is read while waiting")
    install_timeout_s: float = Field(default=1800.0, gt=0)

    @field_validator("extra_site_dirs")
    @classmethod
    def _plain_directories(cls, value: tuple[Path, ...]) -> tuple[Path, ...]:
        # A .pth line that starts with `import` runs at every start of that Python (as root, for the updater).
        for directory in value:
            if not directory.is_absolute() or any(c in str(directory) for c in "\n\r"):
                raise ValueError(f"extra_site_dirs entry {str(directory)!r} must be an absolute path on one line")
        return value


@dataclass(frozen=True)
class DeviceClocks:
    """The clocks a run reads: the wall clock (pointer expiry, what people read), the boot's monotonic clock
    (health: never stepped by NTP) and this boot's id (read once: a run never spans a reboot)."""

    wall: Callable[[], datetime]
    monotonic: Callable[[], float]
    boot_id: str

    def now(self) -> Moment:
        return Moment(wall=self.wall(), monotonic_s=self.monotonic(), boot_id=self.boot_id)


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def this_boot() -> str:
    """This boot's id (Linux's); EdgefleetError where there is none: the updater judges health on it."""
    boot_id = read_boot_id()
    if boot_id is None:
        raise EdgefleetError(f"cannot read this boot's id ({BOOT_ID_FILE})",
                             "the agent updater runs on Linux, with /proc mounted")
    return boot_id


class UpdateResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    outcome: str
    detail: str


def subprocess_runner(command: Sequence[str], timeout_s: float) -> None:
    """Runs a command; EdgefleetError naming it (and its last output) when it fails."""
    try:
        completed = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise EdgefleetError(f"{' '.join(command)} could not run: {error}", "check the updater's settings") from error
    if completed.returncode != 0:
        raise EdgefleetError(f"{' '.join(command)} failed ({completed.returncode}): "
                             f"{(completed.stderr or completed.stdout).strip()[-1000:]}",
                             "see the output; the running agent was not changed")


# --- state and links ---------------------------------------------------------------------------------------

def load_state(install_dir: Path) -> UpdaterState:
    path = install_dir / STATE_FILE
    if not path.exists():
        return UpdaterState()
    try:
        return UpdaterState.model_validate_json(path.read_bytes())
    except (OSError, ValidationError) as error:
        raise VerificationError(f"the updater's state {path} is damaged ({str(error).splitlines()[0]})",
                                "check it; removing it trusts the next signed agent pointer again") from error


def save_state(install_dir: Path, state: UpdaterState) -> None:
    atomic_write_bytes(install_dir / STATE_FILE, state.model_dump_json(indent=2).encode() + b"\n")


def current_target(install_dir: Path) -> str:
    """Where `current` points (relative); `venv` (deploy-agent's) when there is no link yet."""
    link = install_dir / CURRENT_LINK
    return os.readlink(link) if link.is_symlink() else LEGACY_VENV


def switch_current(install_dir: Path, target: str) -> None:
    """Points `current` at `target` atomically: a new link, renamed over the old one."""
    if not (install_dir / target).is_dir():
        raise EdgefleetError(f"{install_dir / target} is not an installed agent", "install it before switching")
    switch_symlink(install_dir / CURRENT_LINK, target)


# --- the release -------------------------------------------------------------------------------------------

def read_pointer(registry: RegistryReader, channel: str) -> ChannelPointer | None:
    data = registry.read_object(agent_channel_key(channel), MAX_POINTER_BYTES)
    return None if data is None else ChannelPointer.model_validate_json(data)


def _check_file(path: Path, entry: FileEntry) -> None:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if path.stat().st_size != entry.size or digest != entry.sha256:
        path.unlink(missing_ok=True)
        raise VerificationError(f"{entry.name} does not match its signed agent manifest (sha256 {digest})",
                                "the registry copy was altered or damaged: re-publish the agent release")


def fetch_release(registry: RegistryReader, public_key: KeyringLike, pointer: ChannelPointer,
                  dest: Path) -> tuple[AgentManifest, Path, Path]:
    """Verifies the release the pointer names (with the keyring's key each signature names) and downloads its
    wheel and this device's lock into `dest`.

    Raises:
        UnknownKeyError: the manifest is signed only by keys the keyring does not hold (yet): wait for the key.
        VerificationError: a manifest that is not the one the pointer names or whose signature by a held key
            does not verify, a file that does not match, or no lock for this Python and CPU.
    """
    version = pointer.version
    where = registry.describe(agent_file_key(version, AGENT_MANIFEST_FILE))
    data = registry.read_object(agent_file_key(version, AGENT_MANIFEST_FILE), MAX_AGENT_MANIFEST_BYTES)
    if data is None or hashlib.sha256(data).hexdigest() != pointer.manifest_sha256:
        raise VerificationError(f"{where} is {'missing' if data is None else 'not the manifest the pointer names'}",
                                "re-publish the agent release and promote it again")
    signature = registry.read_object(agent_file_key(version, AGENT_SIGNATURE_FILE), MAX_SIGNATURE_BYTES) or b""
    signatures = keyed_agent_signatures(data, signature, source=f"{where} signature")
    check_agent_signatures(public_key, data, signatures, what=f"agent manifest {where}")
    manifest = AgentManifest.model_validate_json(data)
    if manifest.version != version:
        raise VerificationError(f"{where} is agent {manifest.version}, not {version}", "re-publish the release")
    python, arch = f"{sys.version_info[0]}.{sys.version_info[1]}", platform.machine()
    lock = manifest.lock_for(python, arch)
    if lock is None:
        raise VerificationError(f"agent {version} has no lock for Python {python} on {arch}",
                                "publish the release with the locks of flows/src/edgefleet/flows/locks/")
    dest.mkdir(parents=True, exist_ok=True)
    for entry in (manifest.wheel, lock):
        registry.download_object(agent_file_key(version, entry.name), dest / entry.name, max_bytes=entry.size)
        _check_file(dest / entry.name, entry)
    return manifest, dest / manifest.wheel.name, dest / lock.name


def install_release(runner: Runner, config: UpdaterConfig, version: str, wheel: Path, lock: Path) -> str:
    """Makes `versions/<version>/venv` (afresh), installs the hashed lock, then the wheel alone; returns the
    target relative to the install dir."""
    target = version_target(version)
    venv = config.install_dir / target
    offline = ["--no-index", "--find-links", str(config.wheelhouse)] if config.wheelhouse else []
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *offline]
    timeout = config.install_timeout_s
    runner([config.python, "-m", "venv", "--clear", str(venv)], timeout)
    if config.extra_site_dirs:
        _write_pth(venv, config.extra_site_dirs)
    runner([*pip, "--require-hashes", "--only-binary", ":all:", "-r", str(lock)], timeout)
    runner([*pip, "--no-deps", "--force-reinstall", str(wheel)], timeout)
    if not (venv / "bin" / "edgefleet-agent").exists():
        raise EdgefleetError(f"{venv} has no bin/edgefleet-agent after installing {wheel.name}",
                             "check the published wheel")
    return target


def _write_pth(venv: Path, directories: tuple[Path, ...]) -> None:
    """`edgefleet-extra-site.pth` in the venv's site-packages: one absolute directory a line."""
    site = next(iter(sorted((venv / "lib").glob("python*/site-packages"))), None)
    if site is None:
        raise EdgefleetError(f"{venv} has no lib/python*/site-packages", "check the updater's python")
    (site / "edgefleet-extra-site.pth").write_text("".join(f"{d}\n" for d in directories))


# --- one run -----------------------------------------------------------------------------------------------

def _status(path: Path) -> AgentStatus | None:
    """The agent's status, read as root from a directory the agent's user owns: only a bounded regular file
    (a FIFO or a symlink to an endless file is no status, never a hang)."""
    try:
        return parse_status(read_regular(path, max_bytes=MAX_STATUS_BYTES, fix="the agent writes status.json"))
    except (OSError, EdgefleetError):
        return None


def await_health(config: UpdaterConfig, state: UpdaterState, runner: Runner, clocks: DeviceClocks,
                 sleep: Callable[[float], None] = time.sleep) -> UpdateResult:
    """Judges the pending switch until healthy or its deadline (restarted after a reboot); rolls back when not
    healthy. Saves the state."""
    assert state.pending is not None
    pending = resumed(state.pending, clocks.now(), timeout_s=config.health_timeout_s, max_waits=config.max_attempts)
    if pending != state.pending:  # a reboot since the switch: the wait restarts on this boot's clock
        state = state.model_copy(update={"pending": pending})
        save_state(config.install_dir, state)
    fresh = timedelta(seconds=config.status_fresh_s)
    while (verdict := health(_status(config.status_file), pending, clocks.now(), fresh_within=fresh)) == "waiting":
        sleep(config.poll_s)
    after = after_health(state, verdict, max_attempts=config.max_attempts)
    if verdict != "healthy":
        switch_current(config.install_dir, pending.previous_target)
        save_state(config.install_dir, after)
        runner(config.restart_command, config.health_timeout_s)
        return UpdateResult(outcome="rolled-back", detail=_rollback_detail(config, pending, verdict, after))
    save_state(config.install_dir, after)
    keep = {Path(target).parent.name for target in (pending.target, pending.previous_target)}
    removed = prune(config.install_dir, keep)
    return UpdateResult(outcome="updated", detail=f"agent {pending.version} runs ({pending.target})"
                        + (f"; removed {', '.join(removed)}" if removed else ""))


def _rollback_detail(config: UpdaterConfig, pending: Pending, verdict: str, after: UpdaterState) -> str:
    back = f"back on {pending.previous_target}"
    if verdict == "unhealthy":
        return f"agent {pending.version} reported failed: {back}, not retried"
    attempts = after.timed_out.count(version_identity(pending.version, pending.manifest_sha256))
    retry = (f"attempt {attempts} of {config.max_attempts}, retried at a later run" if attempts
             else f"refused after {config.max_attempts} attempt(s)")
    return f"agent {pending.version} did not come up healthy within {config.health_timeout_s:g} s: {back} ({retry})"


def run_once(config: UpdaterConfig, registry: RegistryReader, *, runner: Runner = subprocess_runner,
             clock: Callable[[], datetime] = _utc_now, sleep: Callable[[float], None] = time.sleep,
             monotonic: Callable[[], float] = time.monotonic, boot_id: str | None = None) -> UpdateResult:
    """One updater run (see the module docstring). `clock` is the wall clock, `monotonic` the boot's, `boot_id`
    this boot's (read from Linux when None)."""
    clocks = DeviceClocks(wall=clock, monotonic=monotonic, boot_id=boot_id or this_boot())
    state = load_state(config.install_dir)
    if state.pending is not None:
        return await_health(config, state, runner, clocks, sleep)
    pointer = read_pointer(registry, config.channel)
    if pointer is None:
        return UpdateResult(outcome="none", detail=f"no agent channel {config.channel} in {registry.uri}")
    if pointer.model != AGENT_POINTER_MODEL:
        return UpdateResult(outcome="refused", detail=f"the agent channel names model {pointer.model}")
    ring = load_keyring(config.public_key)
    source = registry.describe(agent_channel_key(config.channel))
    if (waiting := _unknown_pointer_key(ring, pointer, source)) is not None:
        return waiting
    judgement = assess_pointer(ring, pointer, state.channel, floor=None, now=clocks.wall(),
                               source=source, running=state.running)
    action = decide(judgement, pointer, state)
    if action.kind != "install":
        return UpdateResult(outcome=action.kind if action.kind == "refuse" else "none", detail=action.reason)
    version_dir = config.install_dir / "versions" / pointer.version
    try:
        _manifest, wheel, lock = fetch_release(registry, ring, pointer, version_dir / "dist")
    except UnknownKeyError as error:  # the device lacks the key (yet): never the release's fault, tried next run
        return _waiting(error, ring)
    target = install_release(runner, config, pointer.version, wheel, lock)
    before = _status(config.status_file)
    now = clocks.now()
    pending = Pending(version=pointer.version, manifest_sha256=pointer.manifest_sha256, target=target,
                      previous_target=current_target(config.install_dir), switched_at=now.wall,
                      boot_id=now.boot_id, switched_s=now.monotonic_s,
                      deadline_s=now.monotonic_s + config.health_timeout_s,
                      channel_after=accepted(state.channel, pointer),
                      ran_model=before is not None and before.version is not None)
    state = state.model_copy(update={"pending": pending})
    save_state(config.install_dir, state)  # before the link moves: a killed updater resumes the verdict
    switch_current(config.install_dir, target)
    try:
        runner(config.restart_command, config.health_timeout_s)
    except EdgefleetError:
        pass  # judged like any agent that does not come up: its status never says running, then rolled back
    return await_health(config, state, runner, clocks, sleep)


def _waiting(error: UnknownKeyError, ring: Keyring) -> UpdateResult:
    return UpdateResult(outcome="waiting", detail=f"{error.message}; nothing changed, tried again at the next run "
                        f"({add_key_fix(ring)})")


def _unknown_pointer_key(ring: Keyring, pointer: ChannelPointer, source: str) -> UpdateResult | None:
    """`waiting` when the pointer is signed by a key the keyring does not hold (yet); None otherwise (the channel
    rules then judge it, refusing a bad signature by a held key)."""
    if not pointer.signed:
        return None
    try:
        verify_pointer(ring, pointer, source=source)
    except UnknownKeyError as error:
        return _waiting(error, ring)
    except VerificationError:
        return None  # a held key that does not verify: `assess_pointer` refuses it, naming why
    return None


def prune(install_dir: Path, keep: set[str]) -> list[str]:
    """Removes installed versions that are neither running nor the rollback; returns them."""
    from edgefleet.device.selfupdate_plan import removable_versions

    versions = install_dir / "versions"
    installed = [path.name for path in versions.iterdir() if path.is_dir()] if versions.is_dir() else []
    removed = removable_versions(installed, keep)
    for version in removed:
        shutil.rmtree(versions / version)
    return removed
