"""`make sandbox`: a local fleet you drive from the Prefect UI, until Ctrl-C or `make sandbox-down`.

Starts, in order: the Pub/Sub emulator and the local twin, a release signing key (a development key), a
local registry directory, N simulated devices (each a real sshd; logging in as the current user), the
Prefect server with the work pool, a worker and the project's deployments parameterized to this sandbox
(`sandbox_deployments`), then runs two deployments through the worker as a user would: `deploy-agent`
(installs the agent on every simulated device, `process` service manager) and `fleet-monitor` (runs until
the sandbox stops). Then it prints where everything is and watches the parts: when one dies, it says which
and stops all the others.

Every process it starts is recorded in `<workdir>/sandbox.json`; `python -m edgefleet.local.sandbox down`
(`make sandbox-down`) stops the sandbox through it, and also cleans up after a sandbox that was killed.

Run: `python -m edgefleet.local.sandbox up [--devices N] [--port P] [--workdir DIR] [--no-schedules]`
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from edgefleet.kernel.errors import EdgefleetError
from edgefleet.local.processes import interruptible, wait_until
from edgefleet.local.sandbox_deployments import (
    DEPLOY_AGENT,
    MONITOR,
    REPO,
    SandboxSettings,
    sandbox_prefect_document,
)
from edgefleet.local.sandbox_state import down, running_sandbox

log = logging.getLogger("edgefleet.sandbox")

SUMMARY_TITLE = "edgefleet sandbox"
UI_URL_LABEL = "Prefect UI:"
console = Console(highlight=False, soft_wrap=True)


class SandboxError(EdgefleetError):
    """The sandbox could not start, or a part of it stopped."""


def _full_name(deployment: str) -> str:
    return f"{deployment}/{deployment}"  # flow and deployment share their name in prefect.yaml


class Sandbox:
    """The sandbox's parts; `start()` brings them up (stopping what it started on failure), `stop()` ends them."""

    def __init__(self, settings: SandboxSettings) -> None:
        self.settings = settings
        self.ui: Any = None
        self.emulator: Any = None
        self.fleet: Any = None
        self.monitor_run_id: str | None = None
        self._next_monitor_check = 0.0

    # --- start ------------------------------------------------------------------------------------
    def start(self) -> Sandbox:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        s = self.settings
        s.workdir.mkdir(parents=True, exist_ok=True)
        self._signing_key()
        self._frames()
        self._emulator()
        self._devices()
        self._prefect()
        self.write_state()
        self._run_deploy_agent()
        self._run_monitor()
        self.write_state()

    def _signing_key(self) -> None:
        from edgefleet.flows.release.keys import resolve_signing_key
        from edgefleet.flows.release.params import SigningParams

        resolve_signing_key(SigningParams(dev_key_file=str(self.settings.signing_key)))  # made on first use
        self.settings.registry.mkdir(parents=True, exist_ok=True)

    def _frames(self) -> None:
        from edgefleet.flows.release.demo_dataset import generate_demo_dataset

        frames = self.settings.frames
        if frames.is_dir() and any(frames.iterdir()):
            return
        source = generate_demo_dataset(self.settings.workdir / "frames-source", self.settings.frames_per_class,
                                       64, seed=99)
        frames.mkdir(parents=True, exist_ok=True)
        for class_dir in sorted(p for p in source.iterdir() if p.is_dir()):
            for image in sorted(class_dir.iterdir()):
                shutil.copy(image, frames / f"{class_dir.name}-{image.name}")

    def _emulator(self) -> None:
        from edgefleet.flows.registry import development_enrolment_key
        from edgefleet.local.emulators import PubSubEmulator
        from edgefleet.local.twin import TwinSettings, emulator_clients, twin_up
        from edgefleet.monitor.config import MonitorConfig

        s = self.settings
        log.info("starting the Pub/Sub emulator and the local twin")
        self.emulator = PubSubEmulator(project=s.project, log_path=s.workdir / "pubsub-emulator.log").start()
        os.environ["PUBSUB_EMULATOR_HOST"] = self.emulator.host
        os.environ.pop("STORAGE_EMULATOR_HOST", None)  # the registry is a local directory
        twin = twin_up(emulator_clients(s.project), TwinSettings(project=s.project, registry_dir=s.registry))
        # Strict, the default: deploy-agent registers each device's key in the sandbox's registry, signed by the
        # sandbox's enrolment key (made here, before deploy-agent runs).
        enrolment_pub = development_enrolment_key(s.enrolment_key, registry_uri=str(s.registry))
        # The release public key (the sandbox's development key, made in `_signing_key`): the monitor takes a
        # release's calibration table only from a manifest it verifies.
        config = MonitorConfig(project=s.project, count_bucket_s=s.monitor_bucket_s, store_path=s.store_path,
                               subscription=twin.monitor_subscription.rsplit("/", 1)[-1],
                               identity={"registry": str(s.registry), "enrolment_keys": [str(enrolment_pub)]},
                               drift={"public_key": f"{s.signing_key}.pub"})
        s.monitor_config.write_text(yaml.safe_dump({"monitor": config.model_dump(mode="json")}))

    def _devices(self) -> None:
        from edgefleet.local.fleet import SimulatedFleet

        log.info("starting %d simulated devices (sshd each)", self.settings.devices)
        # No agents here: deploy-agent installs and starts them, through the worker.
        self.fleet = SimulatedFleet(self.settings.fleet_dir, self.settings.devices, tags={"sim-1": ("canary",)})
        self.fleet.start()
        # The rollout reads each agent's root and release key from deploy-agent's root-owned config directory.
        self.fleet.write_inventory(config_dir=str(self.settings.config_dir))
        self.fleet.adopt_deployed(self.settings.config_dir)

    def _prefect(self) -> None:
        from edgefleet.local.ui import LocalPrefectUi, UiSettings

        s = self.settings
        base = yaml.safe_load((REPO / "prefect.yaml").read_text())
        document = sandbox_prefect_document(base, s, self.emulator.host, sys.executable,
                                            sysconfig.get_path("purelib"))
        s.prefect_yaml.write_text(yaml.safe_dump(document, sort_keys=False))
        log.info("starting the Prefect server, the worker and the sandbox's deployments")
        self.ui = LocalPrefectUi(UiSettings(project_dir=REPO, prefect_file=str(s.prefect_yaml),
                                            prefect_home=s.prefect_home, port=s.port,
                                            run_schedules=s.run_schedules))
        self.ui.start()

    def _create_run(self, deployment: str) -> Any:
        with self.ui.client() as client:
            found = client.read_deployment_by_name(_full_name(deployment))
            return client.create_flow_run_from_deployment(found.id)

    def _wait_run(self, run_id: Any, timeout_s: float, done: Any) -> Any:
        """The flow run once `done(run)` holds or `timeout_s` has passed; raises when a part of the sandbox dies."""
        with self.ui.client() as client:
            def read() -> Any:
                self.check_alive()
                return client.read_flow_run(run_id)

            return wait_until(read, done, timeout_s=timeout_s, interval_s=self.settings.poll_interval_s)

    def _run_deploy_agent(self) -> None:
        log.info("running deploy-agent through the worker (installs the agent on every device)")
        run = self._create_run(DEPLOY_AGENT)
        run = self._wait_run(run.id, self.settings.deploy_agent_timeout_s, lambda r: r.state and r.state.is_final())
        if not (run.state and run.state.is_completed()):
            raise SandboxError(f"the deploy-agent run {run.name} ended {run.state.name if run.state else 'unknown'}"
                               f": {run.state.message if run.state else ''}",
                               f"open {self.ui.ui_url}/runs/flow-run/{run.id} for its logs")

    def _run_monitor(self) -> None:
        log.info("starting fleet-monitor through the worker")
        run = self._create_run(MONITOR)
        self.monitor_run_id = str(run.id)
        store = self.settings.store_path
        run = self._wait_run(run.id, self.settings.monitor_ready_timeout_s,
                             lambda r: store.exists() or (r.state is not None and r.state.is_final()))
        if not store.exists():
            raise SandboxError(f"the fleet-monitor run {run.name} did not create {store} "
                               f"(state {run.state.name if run.state else 'unknown'})",
                               f"open {self.ui.ui_url}/runs/flow-run/{run.id} for its logs")

    # --- watch and stop ---------------------------------------------------------------------------
    def check_alive(self) -> None:
        """Raises EdgefleetError naming the first part that stopped (emulator, a device's sshd, server, worker)."""
        if self.emulator is not None and self.emulator.process is not None:
            self.emulator.process.check_alive()
        if self.fleet is not None:
            for device in self.fleet.devices.values():
                if device.sshd is None or not device.sshd.running:
                    raise SandboxError(f"the sshd of simulated device {device.device_id} stopped",
                                       f"see {device.home / 'sshd.log'}")
        if self.ui is not None:
            self.ui.check_alive()

    def check_monitor(self) -> None:
        """Says once (a warning) when the fleet-monitor run has ended: the sandbox goes on, the user re-runs it."""
        now = time.monotonic()
        if self.monitor_run_id is None or now < self._next_monitor_check:
            return
        self._next_monitor_check = now + self.settings.monitor_check_s
        try:
            with self.ui.client() as client:
                run = client.read_flow_run(self.monitor_run_id)
        except Exception as error:  # noqa: BLE001 - a busy server: ask again next time (check_alive watches it)
            log.debug("reading the fleet-monitor run: %s", error)
            return
        if run.state is not None and run.state.is_final():
            log.warning("the fleet-monitor run %s ended (%s): telemetry is not ingested; run fleet-monitor again "
                        "from the UI (%s/runs/flow-run/%s)", run.name, run.state.name, self.ui.ui_url, run.id)
            self.monitor_run_id = None

    def stop(self) -> None:
        """Stops everything it started (agents, worker and its runs, server, devices, emulator); safe twice."""
        if self.fleet is not None:
            for device_id in self.fleet.devices:
                try:
                    self.fleet.stop_agent(device_id)
                except (OSError, EdgefleetError) as error:  # stopping the rest matters more
                    log.warning("stopping the agent of %s: %s", device_id, error)
        if self.ui is not None:
            self.ui.stop()
        if self.fleet is not None:
            self.fleet.stop()
        if self.emulator is not None:
            self.emulator.stop()
        self.settings.state_file.unlink(missing_ok=True)

    # --- state for `down` -------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """What `down` needs: this process, the process groups and pids it started, the agents' pid files."""
        groups, pids = {}, {}
        if self.emulator is not None and self.emulator.process is not None:
            groups["pubsub-emulator"] = self.emulator.process.pid
        if self.ui is not None:
            groups |= {name: process.pid for name, process in self.ui.processes.items()}
        agent_pid_files = []
        if self.fleet is not None:
            for device in self.fleet.devices.values():
                if device.sshd is not None:
                    pids[f"sshd-{device.device_id}"] = device.sshd.pid
                agent_pid_files.append(str(device.pid_file))
        return {"pid": os.getpid(), "workdir": str(self.settings.workdir), "groups": groups, "pids": pids,
                "agent_pid_files": agent_pid_files,
                "ui_url": self.ui.ui_url if self.ui is not None else None}

    def write_state(self) -> None:
        self.settings.state_file.write_text(json.dumps(self.state(), indent=2))

    # --- summary ----------------------------------------------------------------------------------
    def summary(self) -> str:
        s = self.settings
        config = s.monitor_config
        lines = [
            f"{UI_URL_LABEL} {self.ui.ui_url}",
            f"Prefect API: {self.ui.api_url}  (export PREFECT_API_URL={self.ui.api_url} for the prefect CLI)",
            f"UI password (the API's auth string): the content of {self.ui.settings.auth_string_file} "
            f"(the prefect CLI: export PREFECT_API_AUTH_STRING=$(cat {self.ui.settings.auth_string_file}))",
            f"Devices: {', '.join(self.fleet.devices)} (sshd on 127.0.0.1, agent installed by deploy-agent; "
            "sim-1 is the canary)",
            f"Files: {s.workdir}",
            f"  inventory {s.inventory}",
            f"  registry  {s.registry}  (release key {s.signing_key})",
            f"  monitor   {config}  (fleet state {s.store_path})",
            f"  logs      {s.prefect_home / 'logs'}, {s.config_dir}/sim-*/edgefleet-agent.log",
            "In the UI: Deployments > release-model > Run, then rollout > Run (the canary channel's version);",
            f"  promote-canary runs every {s.promote_every_s} s (healthy_for_s {s.healthy_for_s:g}); "
            "Artifacts show the rollout verdicts and the fleet overview.",
            "A bad release the canary halts: `make sandbox-bad-model` prints a Keras model path for release-model.",
            "Look at the fleet (source .venv/bin/activate):",
            f"  edgefleet fleet status --config {config}",
            f"  edgefleet fleet status --config {config} --html {s.overview_html}",
            f"  edgefleet registry ls --registry {s.registry}",
            "Stop: Ctrl-C here, or `make sandbox-down` from another terminal.",
        ]
        return "\n".join(lines)


def up(settings: SandboxSettings) -> int:
    """Starts the sandbox, prints the summary, watches it until Ctrl-C/SIGTERM or a part stops."""
    other = running_sandbox(settings.workdir)
    if other is not None:
        console.print(f"a sandbox already runs on {settings.workdir} (pid {other})\nfix: use it (its summary is "
                      "in its terminal), or stop it first: make sandbox-down", markup=False)
        return 1
    started = time.monotonic()
    sandbox = Sandbox(settings)
    status = 0
    with interruptible(sandbox.stop):
        try:
            leftovers = down(settings.workdir)
            if leftovers:
                console.print(f"stopped what an earlier sandbox left running: {', '.join(leftovers)}")
            sandbox.start()
            console.print(f"\n== {SUMMARY_TITLE}: ready in {time.monotonic() - started:.0f} s ==\n"
                          f"{sandbox.summary()}\n", markup=False)
            while True:
                sandbox.check_alive()
                sandbox.check_monitor()
                time.sleep(settings.poll_interval_s)
        except KeyboardInterrupt:
            console.print("stopping the sandbox...")
        except EdgefleetError as error:
            console.print(f"sandbox failed: {error.message}\nfix: {error.fix}\nstopping the sandbox...",
                          markup=False)
            status = 1
    console.print("Stopped.")
    return status


def main(argv: list[str] | None = None) -> int:
    defaults = SandboxSettings()
    parser = argparse.ArgumentParser(description="a local fleet driven from the Prefect UI")
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("up", help="start the sandbox and keep it running until Ctrl-C")
    start.add_argument("--devices", type=int, default=int(os.environ.get("SANDBOX_DEVICES") or defaults.devices))
    start.add_argument("--port", type=int, default=defaults.port)
    start.add_argument("--workdir", type=Path, default=defaults.workdir)
    start.add_argument("--release-epochs", type=int, default=defaults.release_epochs)
    start.add_argument("--no-schedules", action="store_true", help="promote-canary / fleet-overview not scheduled")
    stop = sub.add_parser("down", help="stop a running sandbox (or what a killed one left)")
    stop.add_argument("--workdir", type=Path, default=defaults.workdir)
    bad = sub.add_parser("bad-model", help="train a deliberately bad Keras model (shuffled labels) and print "
                                           "its path, for release-model's source (kind keras)")
    bad.add_argument("--workdir", type=Path, default=defaults.workdir)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "paramiko", "prefect"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.command == "bad-model":
        from edgefleet.local.sandbox_bad_model import train_bad_model

        console.print(train_bad_model(args.workdir.resolve()), markup=False)
        return 0
    if args.command == "down":
        killed = down(args.workdir.resolve())
        console.print(f"sandbox stopped{' (killed: ' + ', '.join(killed) + ')' if killed else ''}")
        return 0
    try:
        settings = SandboxSettings(workdir=args.workdir.resolve(), devices=args.devices, port=args.port,
                                   release_epochs=args.release_epochs, run_schedules=not args.no_schedules)
    except ValueError as error:
        Console(stderr=True).print(f"bad sandbox setting: {error}", markup=False)
        return 2
    return up(settings)


if __name__ == "__main__":
    sys.exit(main())
