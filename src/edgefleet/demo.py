"""`make demo`: the whole system end to end on one machine, on embedded defaults.

Starts the local stack (the official Pub/Sub emulator with the local twin of the cloud resources, a local
model registry, simulated devices each with a real sshd and a real agent, the fleet monitor), releases a
model trained on the built-in demo dataset, rolls it out, shows the fleet, releases a second version and
rolls it out canary first behind the canary analysis, then releases a deliberately bad third version (a model
trained on shuffled labels, released like any Keras model: `source: {kind: keras}`) whose rollout starts with a
shadow wave on the canary (the candidate runs beside the current model on a share of its frames, its answers
never acted on) that stops it before any device acts on it, shows the verdict and the fleet, then stops
everything it started, also on Ctrl-C or failure.
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
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from edgefleet.demo_report import DemoReport, ReleaseSummary, RolloutSummary, console, intended, print_closing, step
from edgefleet.local.fleet import SimulatedFleet
from edgefleet.local.stack import FleetSpec, LocalStack, MonitorSpec, PrefectSpec, StackSpec, local_stack, sample_frames

if TYPE_CHECKING:
    from edgefleet.flows.release.decisions import ReleaseResult
    from edgefleet.flows.rollout.flow import RolloutResult

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
    shadow_share: float = Field(default=0.5, gt=0, le=1, description="share of the frames a shadow candidate also "
                                "runs on (the bad release's shadow wave on the canary gets its pairs in seconds)")


def fleet_versions(fleet: SimulatedFleet, model: str) -> dict[str, str]:
    from edgefleet.device.store_reader import StoreReader

    return {device_id: f"{model}:{StoreReader(device.root).pointer(model, 'current')}"
            for device_id, device in fleet.devices.items()}


def _fleet(local: LocalStack) -> SimulatedFleet:
    assert local.fleet is not None, "the demo's stack has a fleet"
    return local.fleet


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
        spec = StackSpec(workdir=self.work)
        self.registry_dir = spec.registry_dir
        self.signing_key = spec.release_key  # a development key, made by the stack on first use
        self.summary: list[tuple[str, str]] = []
        self.report = DemoReport()
        self.summary_json = summary_json

    # --- the local stack -------------------------------------------------------------------------
    def stack_spec(self) -> StackSpec:
        """The demo's local stack: the Pub/Sub emulator with the twin, a local registry, the fleet monitor in this
        process, the simulated devices (sim-1 the canary) with their agents, and a Prefect server of the
        demo's own (its ephemeral server would get Ctrl-C too and die under the running flow)."""
        settings = self.settings
        agent = {
            "model": settings.model,
            "source": {"kind": "images", "path": str(sample_frames(self.work / "frames", settings.frames_per_class)),
                       "max_fps": settings.device_max_fps},
            "telemetry": {"mode": "summary", "summary_interval_s": settings.summary_interval_s,
                          "pubsub_project": settings.project},
            "swap": {"watch_interval_s": 0.5},
            "shadow": {"share": settings.shadow_share},  # a shadow pointer is ignored at 0
        }
        # Fine time buckets: the demo's versions live for seconds, and the canary's before-activation control
        # is read up to the bucket holding the activation. The drift watch ticks at the bucket size too (its
        # default 300 s is longer than the demo), so `fleet status` shows the baselines and accuracy estimates.
        return StackSpec(workdir=self.work, project=settings.project,
                         monitor=MonitorSpec(count_bucket_s=settings.monitor_bucket_s,
                                             drift_interval_s=settings.monitor_bucket_s),
                         fleet=FleetSpec(devices=settings.devices, tags={"sim-1": ("canary",)}, agent=agent,
                                         ready_timeout_s=settings.agent_ready_timeout_s),
                         prefect=PrefectSpec())

    def start_stack(self, stack: ExitStack) -> LocalStack:
        with step(f"Starting the local stack: Pub/Sub emulator and twin, registry, fleet monitor, "
                  f"{self.settings.devices} simulated devices (sshd + edgefleet-agent each), a Prefect server"):
            local = stack.enter_context(local_stack(self.stack_spec()))
        fleet = _fleet(local)
        self.summary += [
            ("Prefect", "a server of the demo's own (stopped); `make ui` for the UI"),
            ("Telemetry", f"{local.twin.topic.rsplit('/', 1)[-1]} on the Pub/Sub emulator (stopped)"),
            ("Fleet state", _shown(local.monitor.store_path)),
            ("Registry", f"{_shown(local.registry_dir)}, key {_shown(local.keys.release_key)}"),
            ("Devices", f"{', '.join(fleet.devices)} (stopped); {_shown(fleet.inventory_path)}"),
        ]
        return local

    # --- releases --------------------------------------------------------------------------------
    def release(self, version: str, epochs: int, channel: str | None, keras_model: Path | None = None,
                seed: int | None = None) -> ReleaseResult:
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
        with step(f"Releasing {self.settings.model} {version} ({what} -> int8 -> evaluate -> "
                  f"compile -> sign -> publish" + (f" to '{channel}')" if channel else ")")):
            result = release_model(params)
        self.report.releases.append(ReleaseSummary(model=self.settings.model, version=version,
                                                   published=bool(result.published)))
        metrics = result.metrics
        size = f"{metrics.int8_size_bytes / 1024:.0f} KiB" if metrics.int8_size_bytes is not None else "size unknown"
        console.print(f"  float accuracy {metrics.float_accuracy:.1%}, int8 {metrics.int8_accuracy:.1%}, "
                      f"int8 {size}; variants {', '.join(result.variants)}"
                      + (f"; {result.compile_skipped_reason}" if result.compile_skipped_reason else ""))
        return result

    # --- devices ---------------------------------------------------------------------------------
    def train_bad_model(self) -> Path:
        from edgefleet.demo_models import train_shuffled_labels_model

        with step("Training a deliberately bad model (shuffled labels): it converts, compiles and passes the "
                  "device's smoke test"):
            return train_shuffled_labels_model(self.work / "bad-model", self.settings.samples_per_class,
                                               self.settings.epochs_bad)

    def rollout(self, local: LocalStack, version: str, waves: list[int | str], *,
                expect_halt: bool = False, shadow: bool = False) -> RolloutResult:
        """Rolls `version` out in `waves`; with `shadow`, the first wave's devices (the canary) run it first as a
        shadow beside their current model, judged before any device acts on it."""
        from edgefleet.cli.rollout import print_verdicts
        from edgefleet.flows.registry import open_registry_writer
        from edgefleet.flows.rollout.flow import RolloutHalted, rollout
        from edgefleet.flows.rollout.params import RolloutParams
        from edgefleet.flows.rollout.record import RecordStore

        params = RolloutParams.model_validate({
            "inventory": str(_fleet(local).inventory_path), "registry": str(self.registry_dir),
            "model": self.settings.model, "version": version, "waves": waves,
            "health": {"timeout_s": self.settings.health_timeout_s},
            "canary": {"min_live_inferences": self.settings.health_min_inferences},
            "monitor_config": str(local.monitor_config_path), "work_dir": str(self.work / "rollout-work"),
            "public_key": str(local.keys.release_public_key),
            # the story follows sim-1, the device tagged canary: it goes first (rollouts default to random order)
            "wave_selection": {"order": "inventory"},
            "shadow": {"enabled": shadow},
        })
        flow_runs_log = logging.getLogger("prefect.flow_runs")
        level = flow_runs_log.level
        if expect_halt:  # Prefect logs a failed flow run with its traceback: here it is the intended outcome
            flow_runs_log.setLevel(logging.CRITICAL)
        first = "a shadow wave on the canary, then " if shadow else ""
        with step(f"Rolling out {self.settings.model} {version} in waves {waves} ({first}canary analysis per "
                  "wave)"):
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
        if record is not None and record.halted is not None:
            console.print(f"  halted in wave {record.halted.wave} by {', '.join(record.halted.halted_by)}: "
                          f"{record.halted.reason}", markup=False)
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
        from edgefleet.flows.release.native_logs import native_logs_to

        started = time.monotonic()
        # TensorFlow's native log lines (they ignore TF_CPP_MIN_LOG_LEVEL) go to a file, not between the steps.
        native_log = self.work / NATIVE_LOG
        with native_logs_to(native_log), ExitStack() as stack:
            local = self.start_stack(stack)
            store = local.monitor.store_path
            self.release("1.0.0", self.settings.epochs_v1, channel="canary")
            self.rollout(local, "1.0.0", [1, "100%"])
            self.show_fleet(store, "Fleet after rolling out 1.0.0")
            self.release("1.1.0", self.settings.epochs_v2, channel="canary")
            self.rollout(local, "1.1.0", [1, "100%"])
            self.show_fleet(store, "Fleet after the canary-first rollout of 1.1.0")
            # Published without moving a channel: the rollout names the version, and would move nothing
            # until its last wave passed.
            bad = self.release("1.2.0", self.settings.epochs_bad, channel=None, keras_model=self.train_bad_model())
            # Its shadow wave on the canary stops it before any device acts on its answers (issue 25).
            self.rollout(local, bad.version, [1, "100%"], expect_halt=True, shadow=True)
            self.show_fleet(store, "Fleet after the shadow wave stopped 1.2.0 (shuffled labels) before any device "
                                   "acted on it")
            self.report.devices = fleet_versions(_fleet(local), self.settings.model)
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
