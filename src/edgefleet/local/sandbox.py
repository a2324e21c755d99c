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
import sys
import sysconfig
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

import yaml
from rich.console import Console

from edgefleet.kernel.errors import EdgefleetError
from edgefleet.local.fleet import SimulatedFleet
from edgefleet.local.processes import LOOPBACK, free_port, interruptible, wait_until
from edgefleet.local.sandbox_deployments import (
    DEPLOY_AGENT,
    MONITOR,
    REPO,
    SandboxSettings,
    sandbox_prefect_document,
)
from edgefleet.local.sandbox_state import down, running_sandbox
from edgefleet.local.stack import (
    FleetSpec,
    LocalStack,
    MonitorSpec,
    PrefectSpec,
    PubSubSpec,
    StackSpec,
    local_stack,
    sample_frames,
)
from edgefleet.local.ui import LocalPrefectUi

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

log = logging.getLogger("edgefleet.sandbox")

SUMMARY_TITLE = "edgefleet sandbox"
UI_URL_LABEL = "Prefect UI:"
console = Console(highlight=False, soft_wrap=True)


class SandboxError(EdgefleetError):
    """The sandbox could not start, or a part of it stopped."""


def _full_name(deployment: str) -> str:
    return f"{deployment}/{deployment}"  # flow and deployment share their name in prefect.yaml


def stack_spec(settings: SandboxSettings, pubsub_port: int) -> StackSpec:
    """The sandbox's local stack: the emulator on `pubsub_port` (the deployments name it before it starts) with
    the twin, the monitor's config (the fleet-monitor deployment runs it), devices without agents (deploy-agent
    installs them) and a Prefect server with the sandbox's deployments and a worker."""
    return StackSpec(workdir=settings.workdir, project=settings.project, pubsub=PubSubSpec(port=pubsub_port),
                     monitor=MonitorSpec(count_bucket_s=settings.monitor_bucket_s, in_process=False),
                     fleet=FleetSpec(devices=settings.devices, tags={"sim-1": ("canary",)}),
                     prefect=PrefectSpec(prefect_file=settings.prefect_yaml, port=settings.port,
                                         run_schedules=settings.run_schedules))


class Sandbox:
    """The sandbox's parts; `start()` brings them up (stopping what it started on failure), `stop()` ends them."""

    def __init__(self, settings: SandboxSettings) -> None:
        self.settings = settings
        self._stack = ExitStack()
        self.local: LocalStack | None = None
        self.monitor_run_id: UUID | None = None
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
        sample_frames(s.frames, s.frames_per_class)
        pubsub_port = free_port()
        base = yaml.safe_load((REPO / "prefect.yaml").read_text())
        document = sandbox_prefect_document(base, s, f"{LOOPBACK}:{pubsub_port}", sys.executable,
                                            sysconfig.get_path("purelib"))
        s.prefect_yaml.write_text(yaml.safe_dump(document, sort_keys=False))
        log.info("starting the local stack: emulator and twin, %d simulated devices (sshd each), the Prefect "
                 "server with the work pool, a worker and the sandbox's deployments", s.devices)
        self.local = self._stack.enter_context(local_stack(stack_spec(s, pubsub_port)))
        # The rollout reads each agent's root and release key from deploy-agent's root-owned config directory.
        fleet = self._fleet()
        fleet.write_inventory(config_dir=str(s.config_dir))
        fleet.adopt_deployed(s.config_dir)
        self.write_state()
        self._run_deploy_agent()
        self._run_monitor()
        self.write_state()

    def _fleet(self) -> SimulatedFleet:
        if self.local is None or self.local.fleet is None:
            raise SandboxError("the sandbox is not started", "start it: make sandbox")
        return self.local.fleet

    def _ui(self) -> LocalPrefectUi:
        if self.local is None or self.local.prefect is None:
            raise SandboxError("the sandbox is not started", "start it: make sandbox")
        return self.local.prefect

    def _create_run(self, deployment: str) -> FlowRun:
        with self._ui().client() as client:
            found = client.read_deployment_by_name(_full_name(deployment))
            return client.create_flow_run_from_deployment(found.id)

    def _wait_run(self, run_id: UUID, timeout_s: float, done: Callable[[FlowRun], object]) -> FlowRun:
        """The flow run once `done(run)` holds or `timeout_s` has passed; raises when a part of the sandbox dies."""
        with self._ui().client() as client:
            def read() -> FlowRun:
                self.check_alive()
                return client.read_flow_run(run_id)

            return wait_until(read, lambda run: bool(done(run)), timeout_s=timeout_s,
                              interval_s=self.settings.poll_interval_s)

    def _run_deploy_agent(self) -> None:
        log.info("running deploy-agent through the worker (installs the agent on every device)")
        run = self._create_run(DEPLOY_AGENT)
        run = self._wait_run(run.id, self.settings.deploy_agent_timeout_s, lambda r: r.state and r.state.is_final())
        if not (run.state and run.state.is_completed()):
            raise SandboxError(f"the deploy-agent run {run.name} ended {run.state.name if run.state else 'unknown'}"
                               f": {run.state.message if run.state else ''}",
                               f"open {self._ui().ui_url}/runs/flow-run/{run.id} for its logs")

    def _run_monitor(self) -> None:
        log.info("starting fleet-monitor through the worker")
        run = self._create_run(MONITOR)
        self.monitor_run_id = run.id
        store = self.settings.store_path
        run = self._wait_run(run.id, self.settings.monitor_ready_timeout_s,
                             lambda r: store.exists() or (r.state is not None and r.state.is_final()))
        if not store.exists():
            raise SandboxError(f"the fleet-monitor run {run.name} did not create {store} "
                               f"(state {run.state.name if run.state else 'unknown'})",
                               f"open {self._ui().ui_url}/runs/flow-run/{run.id} for its logs")

    # --- watch and stop ---------------------------------------------------------------------------
    def check_alive(self) -> None:
        """Raises EdgefleetError naming the first part that stopped (emulator, a device's sshd, server, worker)."""
        if self.local is not None:
            self.local.check_alive()

    def check_monitor(self) -> None:
        """Says once (a warning) when the fleet-monitor run has ended: the sandbox goes on, the user re-runs it."""
        now = time.monotonic()
        if self.monitor_run_id is None or now < self._next_monitor_check:
            return
        self._next_monitor_check = now + self.settings.monitor_check_s
        try:
            with self._ui().client() as client:
                run = client.read_flow_run(self.monitor_run_id)
        except Exception as error:  # noqa: BLE001 - a busy server: ask again next time (check_alive watches it)
            log.debug("reading the fleet-monitor run: %s", error)
            return
        if run.state is not None and run.state.is_final():
            log.warning("the fleet-monitor run %s ended (%s): telemetry is not ingested; run fleet-monitor again "
                        "from the UI (%s/runs/flow-run/%s)", run.name, run.state.name, self._ui().ui_url, run.id)
            self.monitor_run_id = None

    def stop(self) -> None:
        """Stops everything it started (agents, worker and its runs, server, devices, emulator); safe twice."""
        fleet = self.local.fleet if self.local is not None else None
        for device_id in (fleet.devices if fleet is not None else ()):
            assert fleet is not None
            try:
                fleet.stop_agent(device_id)
            except (OSError, EdgefleetError) as error:  # stopping the rest matters more
                log.warning("stopping the agent of %s: %s", device_id, error)
        self._stack.close()
        self.settings.state_file.unlink(missing_ok=True)

    # --- state for `down` -------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """What `down` needs: this process, the process groups and pids it started, the agents' pid files."""
        groups: dict[str, int | None] = {}
        pids: dict[str, int | None] = {}
        agent_pid_files: list[str] = []
        local = self.local
        if local is not None and local.emulator is not None and local.emulator.process is not None:
            groups["pubsub-emulator"] = local.emulator.process.pid
        if local is not None and local.prefect is not None:
            groups |= {name: process.pid for name, process in local.prefect.processes.items()}
        for device in (local.fleet.devices.values() if local is not None and local.fleet is not None else ()):
            if device.sshd is not None:
                pids[f"sshd-{device.device_id}"] = device.sshd.pid
            agent_pid_files.append(str(device.pid_file))
        return {"pid": os.getpid(), "workdir": str(self.settings.workdir), "groups": groups, "pids": pids,
                "agent_pid_files": agent_pid_files,
                "ui_url": local.prefect.ui_url if local is not None and local.prefect is not None else None}

    def write_state(self) -> None:
        self.settings.state_file.write_text(json.dumps(self.state(), indent=2))

    # --- summary ----------------------------------------------------------------------------------
    def summary(self) -> str:
        s = self.settings
        config = s.monitor_config
        ui, fleet = self._ui(), self._fleet()
        lines = [
            f"{UI_URL_LABEL} {ui.ui_url}",
            f"Prefect API: {ui.api_url}  (export PREFECT_API_URL={ui.api_url} for the prefect CLI)",
            f"UI password (the API's auth string): the content of {ui.settings.auth_string_file} "
            f"(the prefect CLI: export PREFECT_API_AUTH_STRING=$(cat {ui.settings.auth_string_file}))",
            f"Devices: {', '.join(fleet.devices)} (sshd on 127.0.0.1, agent installed by deploy-agent; "
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
