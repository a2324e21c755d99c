"""`make demo`: the whole system end to end on one machine, on embedded defaults.

Starts the local stack (the official Pub/Sub emulator with the local twin of the cloud resources, a local
model registry, simulated devices each with a real sshd and a real agent, the fleet monitor), releases a
model trained on the built-in demo dataset, rolls it out, shows the fleet, releases a second version and
rolls it out canary first behind the canary analysis, then releases a deliberately bad third version (a model
trained on shuffled labels, released like any Keras model: `source: {kind: keras}`) that the canary analysis
catches in the first wave and rolls back, shows the verdict and the fleet, then stops everything it started,
also on Ctrl-C or failure.
Needs nothing but the repository (no ../shared). It exits 0 when every step went as intended, the bad
release's halt included.

Run: `python -m edgefleet.demo [--devices N] [--workdir DIR] [--summary-json FILE]`
(`make demo DEMO_ARGS="--devices 5"`).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from edgefleet.demo_report import DemoReport, ReleaseSummary, RolloutSummary, console, intended, print_closing, step

log = logging.getLogger("edgefleet.demo")

REPO = Path(__file__).resolve().parents[2]  # src/edgefleet/demo.py
NATIVE_LOG = "tensorflow.log"  # in the workdir: TensorFlow's native log lines
TABLE_COLUMNS = 120  # the fleet table's natural width; narrower terminals get ellipses


class DemoSettings(BaseModel):
    """Every knob of the demo in one place (defaults sized for a 2-core machine)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    workdir: Path = Field(default=REPO / ".edgefleet" / "demo", description="everything the demo writes")
    model: str = "shapes"
    devices: int = Field(default=3, ge=2, le=20)
    project: str = "edgefleet-local"
    frames_per_class: int = Field(default=4, ge=1, description="sample images each device cycles through")
    device_max_fps: float = Field(default=20.0, gt=0, description="3 agents + sshd stay light on 2 cores, and "
                                                                  "a wave gets the canary's samples in seconds")
    summary_interval_s: float = Field(default=1.0, gt=0, description="agent telemetry summary period")
    epochs_v1: int = Field(default=3, ge=1)
    epochs_v2: int = Field(default=6, ge=1)
    epochs_bad: int = Field(default=6, ge=1, description="the shuffled-labels model of the bad release")
    samples_per_class: int = Field(default=80, ge=8)
    health_min_inferences: int = Field(default=10, ge=1)
    health_timeout_s: float = Field(default=90.0, gt=0)
    monitor_bucket_s: float = Field(default=5.0, gt=0, description="the fleet monitor's time buckets")
    settle_s: float = Field(default=3.0, ge=0, description="wait before showing the fleet, so telemetry lands")
    agent_ready_timeout_s: float = Field(default=60.0, gt=0, description="wait for every agent's first status")


def fleet_versions(fleet: Any, model: str) -> dict[str, str]:
    from edgefleet.device.store_reader import StoreReader

    return {device_id: f"{model}:{StoreReader(device.root).pointer(model, 'current')}"
            for device_id, device in fleet.devices.items()}


def _env_defaults(settings: DemoSettings) -> None:
    # Local, private, no network: Prefect's ephemeral API keeps its database under the demo's directory.
    os.environ.setdefault("PREFECT_HOME", str(settings.workdir / "prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")  # the demo says what happens itself
    os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")  # its server is gone afterwards
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _shown(path: Path) -> str:
    """A path as short as the user can use it: relative to the repository when inside it."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


class Demo:
    """The demo's steps; `run()` does them in order inside one ExitStack that stops what it started."""

    def __init__(self, settings: DemoSettings, summary_json: Path | None = None) -> None:
        self.settings = settings
        self.work = settings.workdir
        self.registry_dir = self.work / "registry"
        self.enrolment_key = self.work / "fleet-enrolment.key"  # signs the device key records the monitor reads
        self.signing_key = self.work / "keys" / "release-signing.key"  # a development key, made on first use
        self.stop_monitor = threading.Event()
        self.summary: list[tuple[str, str]] = []
        self.report = DemoReport()
        self.summary_json = summary_json

    # --- the local stack -------------------------------------------------------------------------
    def start_prefect(self, stack: ExitStack) -> None:
        """A Prefect server of the demo's own, in its own session: Ctrl-C reaches the demo only, which then
        stops everything in order (Prefect's ephemeral server would get the signal too and die under the
        running flow)."""
        from edgefleet.local.ui import LocalPrefectUi, UiSettings

        with step("Starting a local Prefect server (analytics off)"):
            server = LocalPrefectUi(UiSettings(project_dir=REPO, prefect_home=self.work / "prefect", port=0,
                                               run_schedules=False))
            stack.callback(server.stop)
            server.start_server()
            os.environ.update(PREFECT_API_URL=server.api_url, PREFECT_UI_URL=server.ui_url,
                              PREFECT_API_AUTH_STRING=server.auth_string or "")
        self.summary.append(("Prefect", "a server of the demo's own (stopped); `make ui` for the UI"))

    def start_stack(self, stack: ExitStack) -> None:
        from edgefleet.local.emulators import PubSubEmulator
        from edgefleet.local.twin import TwinSettings, emulator_clients, twin_up

        with step("Starting the Pub/Sub emulator and the local twin of the cloud resources"):
            emulator = stack.enter_context(PubSubEmulator(project=self.settings.project,
                                                          log_path=self.work / "pubsub-emulator.log"))
            os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host
            os.environ.pop("STORAGE_EMULATOR_HOST", None)  # the registry is a local directory here
            self.twin = twin_up(emulator_clients(self.settings.project),
                                TwinSettings(project=self.settings.project, registry_dir=self.registry_dir))
        self.summary.append(("Telemetry", f"{self.twin.topic.rsplit('/', 1)[-1]} on the Pub/Sub emulator (stopped)"))

    def start_monitor(self, stack: ExitStack) -> Path:
        from edgefleet.flows.registry import development_enrolment_key
        from edgefleet.flows.release.keys import public_key_path, resolve_signing_key
        from edgefleet.flows.release.params import SigningParams
        from edgefleet.monitor.config import MonitorConfig
        from edgefleet.monitor.service import run_monitor

        store = self.work / "fleet.sqlite"
        # Fine time buckets: the demo's versions live for seconds, and the canary's before-activation control
        # is read up to the bucket holding the activation.
        # Strict, the default: only telemetry signed by a device whose key the registry holds (the fleet
        # publishes each device's key there when it starts its agent, signed by the fleet enrolment key).
        enrolment_public = development_enrolment_key(self.enrolment_key, registry_uri=str(self.registry_dir))
        # The release public key (the demo's development key, made now, before the first release signs with it):
        # the monitor takes a release's calibration table only from a manifest it verifies. Its drift watch ticks
        # at the demo's bucket size (the default 300 s is longer than the demo), so `fleet status` shows the
        # devices' baselines and accuracy estimates.
        resolve_signing_key(SigningParams(dev_key_file=str(self.signing_key)), registry_uri=str(self.registry_dir))
        bucket_s = self.settings.monitor_bucket_s
        config = MonitorConfig(project=self.settings.project, count_bucket_s=bucket_s,
                               subscription=self.twin.monitor_subscription.rsplit("/", 1)[-1], store_path=store,
                               identity={"registry": str(self.registry_dir),
                                         "enrolment_keys": [str(enrolment_public)]},
                               drift={"public_key": str(public_key_path(self.signing_key)), "interval_s": bucket_s,
                                      "settle_s": bucket_s})
        (self.work / "monitor.yaml").write_text(yaml.safe_dump({"monitor": config.model_dump(mode="json")}))
        thread = threading.Thread(target=run_monitor, args=(config, self.stop_monitor), name="fleet-monitor",
                                  daemon=True)
        thread.start()
        stack.callback(thread.join, 30)
        stack.callback(self.stop_monitor.set)
        self.summary.append(("Fleet state", _shown(store)))
        self.summary.append(("Registry", f"{_shown(self.registry_dir)}, key {_shown(self.signing_key)}"))
        return store

    # --- releases --------------------------------------------------------------------------------
    def release(self, version: str, epochs: int, channel: str | None, keras_model: Path | None = None,
                seed: int | None = None) -> Any:
        from edgefleet.flows.release.flow import release_model
        from edgefleet.flows.release.params import ReleaseParams

        params = ReleaseParams.model_validate({
            "model": self.settings.model, "version": version, "channel": channel,
            "registry": str(self.registry_dir), "work_dir": str(self.work / "release-work"),
            "dataset": {"source": "demo", "demo_samples_per_class": self.settings.samples_per_class},
            "training": {"epochs": epochs, "seed": seed if seed is not None else int(not version.startswith("1.0"))},
            **({"source": {"kind": "keras", "path": str(keras_model)}} if keras_model else {}),
            "compile": {"mode": "local"},
            "signing": {"dev_key_file": str(self.signing_key)},
        })
        what = f"the Keras model {keras_model.name}" if keras_model else f"train {epochs} epochs"
        with step(f"Releasing {self.settings.model} {version} ({what} -> int8 -> compile -> "
                  f"evaluate -> sign -> publish" + (f" to '{channel}')" if channel else ")")):
            result = release_model(params)
        self.report.releases.append(ReleaseSummary(model=self.settings.model, version=version,
                                                   published=bool(result.published)))
        metrics = result.metrics
        console.print(f"  float accuracy {metrics.float_accuracy:.1%}, int8 {metrics.int8_accuracy:.1%}, "
                      f"int8 {metrics.int8_size_bytes / 1024:.0f} KiB; variants {', '.join(result.variants)}"
                      + (f"; {result.compile_skipped_reason}" if result.compile_skipped_reason else ""))
        return result

    # --- devices ---------------------------------------------------------------------------------
    def sample_frames(self) -> Path:
        from edgefleet.flows.release.demo_dataset import generate_demo_dataset

        frames = self.work / "frames"
        if frames.exists():
            return frames
        dataset = generate_demo_dataset(self.work / "frames-source", self.settings.frames_per_class, 64, seed=99)
        frames.mkdir(parents=True)
        for class_dir in sorted(p for p in dataset.iterdir() if p.is_dir()):
            for image in sorted(class_dir.iterdir()):
                shutil.copy(image, frames / f"{class_dir.name}-{image.name}")
        return frames

    def start_fleet(self, stack: ExitStack, public_key: Path) -> Any:
        from edgefleet.local.fleet import SimulatedFleet

        agent = {
            "model": self.settings.model,
            "source": {"kind": "images", "path": str(self.sample_frames()), "max_fps": self.settings.device_max_fps},
            "telemetry": {"mode": "summary", "summary_interval_s": self.settings.summary_interval_s,
                          "pubsub_project": self.settings.project},
            "swap": {"watch_interval_s": 0.5},
        }
        tags = {"sim-1": ("canary",)}
        with step(f"Starting {self.settings.devices} simulated devices (sshd + edgefleet-agent each)"):
            fleet = SimulatedFleet(self.work / "fleet", self.settings.devices, agent=agent, tags=tags,
                                   agent_env={"PUBSUB_EMULATOR_HOST": os.environ["PUBSUB_EMULATOR_HOST"]},
                                   key_registry=str(self.registry_dir), enrolment_key=self.enrolment_key)
            fleet.base_dir.mkdir(parents=True, exist_ok=True)
            for device in fleet.devices.values():  # what deploy-agent installs: the release public key
                (device.root / "keys").mkdir(parents=True, exist_ok=True)
                shutil.copy(public_key, device.root / "keys" / "release.pub")
            stack.enter_context(fleet)
            fleet.wait_agents(lambda status: status.state == "running", self.settings.agent_ready_timeout_s)
        self.summary.append(("Devices", f"{', '.join(fleet.devices)} (stopped); {_shown(fleet.inventory_path)}"))
        return fleet

    def train_bad_model(self) -> Path:
        from edgefleet.demo_models import train_shuffled_labels_model

        with step("Training a deliberately bad model (shuffled labels): it converts, compiles and passes the "
                  "device's smoke test"):
            return train_shuffled_labels_model(self.work / "bad-model", self.settings.samples_per_class,
                                               self.settings.epochs_bad)

    def rollout(self, fleet: Any, version: str, waves: list[Any], monitor_config: Path, *,
                expect_halt: bool = False) -> Any:
        from edgefleet.cli.rollout import print_verdicts
        from edgefleet.flows.registry import open_registry_writer
        from edgefleet.flows.release.keys import public_key_path
        from edgefleet.flows.rollout.flow import RolloutHalted, rollout
        from edgefleet.flows.rollout.params import RolloutParams
        from edgefleet.flows.rollout.record import RecordStore

        params = RolloutParams.model_validate({
            "inventory": str(fleet.inventory_path), "registry": str(self.registry_dir),
            "model": self.settings.model, "version": version, "waves": waves,
            "health": {"timeout_s": self.settings.health_timeout_s},
            "canary": {"min_live_inferences": self.settings.health_min_inferences},
            "monitor_config": str(monitor_config), "work_dir": str(self.work / "rollout-work"),
            "public_key": str(public_key_path(self.signing_key)),
            # the story follows sim-1, the device tagged canary: it goes first (rollouts default to random order)
            "wave_selection": {"order": "inventory"},
        })
        flow_runs_log = logging.getLogger("prefect.flow_runs")
        level = flow_runs_log.level
        if expect_halt:  # Prefect logs a failed flow run with its traceback: here it is the intended outcome
            flow_runs_log.setLevel(logging.CRITICAL)
        with step(f"Rolling out {self.settings.model} {version} in waves {waves} (canary analysis per wave)"):
            try:
                result = rollout(params)
            except RolloutHalted as halted:
                if not expect_halt:
                    raise
                result = halted.result
            finally:
                flow_runs_log.setLevel(level)
        console.print(f"  {result.state}: {result.done} devices done, {result.failed} failed, "
                      f"{result.rolled_back} rolled back, {result.bytes_transferred / 1024:.0f} KiB sent; "
                      f"record {result.record_uri}")
        record = RecordStore(open_registry_writer(self.registry_dir), result.rollout_id).load()
        if record is not None and (expect_halt or record.halted):
            print_verdicts(record, console)
        rolled_back = sorted(d.device_id for d in record.devices.values() if d.state == "rolled_back") \
            if record else []
        self.report.rollouts.append(RolloutSummary(
            id=result.rollout_id, version=version, outcome="halted" if result.state == "halted" else "completed",
            halted_by=list(result.halted_by), devices_rolled_back=rolled_back))
        return result

    def show_fleet(self, store: Path, title: str) -> None:
        time.sleep(self.settings.settle_s)
        console.rule(title)
        subprocess.run([sys.executable, "-m", "edgefleet.cli", "fleet", "status", "--db", str(store)], check=False,
                       env={**os.environ, "COLUMNS": str(max(console.width, TABLE_COLUMNS))})

    # --- the whole run -----------------------------------------------------------------------------
    def run(self) -> int:
        from edgefleet.flows.release.keys import public_key_path
        from edgefleet.flows.release.native_logs import native_logs_to

        started = time.monotonic()
        # TensorFlow's native log lines (they ignore TF_CPP_MIN_LOG_LEVEL) go to a file, not between the steps.
        native_log = self.work / NATIVE_LOG
        with native_logs_to(native_log), ExitStack() as stack:
            self.start_prefect(stack)
            self.start_stack(stack)
            store = self.start_monitor(stack)
            self.release("1.0.0", self.settings.epochs_v1, channel="canary")
            fleet = self.start_fleet(stack, public_key_path(self.signing_key))
            self.rollout(fleet, "1.0.0", [1, "100%"], self.work / "monitor.yaml")
            self.show_fleet(store, "Fleet after rolling out 1.0.0")
            self.release("1.1.0", self.settings.epochs_v2, channel="canary")
            self.rollout(fleet, "1.1.0", [1, "100%"], self.work / "monitor.yaml")
            self.show_fleet(store, "Fleet after the canary-first rollout of 1.1.0")
            # Published without moving a channel: the rollout names the version, and would move nothing
            # until its last wave passed.
            bad = self.release("1.2.0", self.settings.epochs_bad, channel=None, keras_model=self.train_bad_model())
            self.rollout(fleet, bad.version, [1, "100%"], self.work / "monitor.yaml", expect_halt=True)
            self.show_fleet(store, "Fleet after the canary analysis stopped 1.2.0 (shuffled labels)")
            self.report.devices = fleet_versions(fleet, self.settings.model)
        self.summary.append(("TensorFlow's log", _shown(native_log)))
        self.report.ok = intended(self.report, ["1.0.0", "1.1.0"], "1.2.0")
        if self.summary_json is not None:
            self.summary_json.write_text(self.report.model_dump_json(indent=2))
        print_closing(self.summary, self.report.ok, time.monotonic() - started, _shown(self.work))
        return 0 if self.report.ok else 1

def _install_signal_handlers() -> None:
    # SIGTERM behaves like Ctrl-C: the ExitStack unwinds and stops everything the demo started.
    def interrupt(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


def main(argv: list[str] | None = None, run: Callable[[DemoSettings], int] | None = None) -> int:
    parser = argparse.ArgumentParser(description="edgefleet end to end on one machine")
    parser.add_argument("--devices", type=int, default=DemoSettings().devices)
    parser.add_argument("--workdir", type=Path, default=DemoSettings().workdir)
    parser.add_argument("--summary-json", type=Path, default=None,
                        help="write a machine-readable summary of the run to this file")
    args = parser.parse_args(argv)
    settings = DemoSettings(devices=args.devices, workdir=args.workdir.resolve())
    if settings.workdir.exists():
        shutil.rmtree(settings.workdir)
    settings.workdir.mkdir(parents=True)
    _env_defaults(settings)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    _install_signal_handlers()
    from edgefleet.kernel.console import print_error
    from edgefleet.kernel.errors import EdgefleetError

    try:
        summary_json = args.summary_json.resolve() if args.summary_json else None
        return (run or (lambda s: Demo(s, summary_json).run()))(settings)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: everything the demo started has been stopped[/]")
        return 130
    except EdgefleetError as error:  # its message and fix, whole (no markup read from them)
        print_error(error.message, error.fix, label="demo failed", console=console)
        return 1


if __name__ == "__main__":
    sys.exit(main())
