"""Rollout benchmark (issue 6), against a baseline measured in the same run.

20 simulated devices (a real sshd and a real agent running mobilenet_v1_0.25_128_quant each):

1. Baseline: 20 sequential single-device rollouts (one `rollout` flow run per device, waves [1]) of 2.0.0.
2. Waves: one rollout of 3.0.0 to all 20 with waves [1, "25%", "100%"] (max_parallel 20).
   Goal: wall time at most 0.35x of the baseline.
3. Repeat: the same version again under a new rollout id. Goal: 0 model bytes transferred.
4. Time from activation to healthy per device (from the waves rollout's record).

Each version is the same network with its own build tag appended after the flatbuffer, so every version
has its own model bytes (as a retrained release would). Health comes from the agents' own status over SSH
(no fleet monitor here, so no telemetry lag is measured; the tests cover the monitor path).

Run: `python -m bench.rollout_bench [--devices N] [--fps F]` (needs ../shared/coral-test-data and sshd).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

CORAL = Path(__file__).resolve().parents[2] / "shared" / "coral-test-data"
MODEL = "imagenet"
MODEL_FILE = "mobilenet_v1_0.25_128_quant.tflite"
GOAL_RATIO = 0.35


def _build(base: Path, version: str, private_key, golden) -> Path:
    from edgefleet.flows.release.bundle import create_version_dir

    dest = base / "builds" / version
    model_bytes = (CORAL / MODEL_FILE).read_bytes() + b"\0" * 16 + f"edgefleet-build:{version}".encode()
    create_version_dir(dest, {"model_cpu.tflite": model_bytes, "labels.txt": CORAL / "imagenet_labels.txt"},
                       private_key=private_key, model=MODEL, version=version, golden=golden)
    return dest


def run(devices: int, fps: float, base: Path) -> dict:
    from prefect.testing.utilities import prefect_test_harness

    from edgefleet.device.runtime.engine import Engine
    from edgefleet.device.runtime.golden import compute_golden
    from edgefleet.device.store import ModelStore
    from edgefleet.flows.registry import open_registry_writer, rollout_key
    from edgefleet.flows.rollout.flow import rollout
    from edgefleet.flows.rollout.params import RolloutParams
    from edgefleet.kernel.trust.signatures import generate_keypair, save_public_key
    from edgefleet.local.fleet import SimulatedFleet

    private_key, public_key = generate_keypair()
    public_key_file = save_public_key(public_key, base / "release.pub")
    with Engine.open(CORAL / MODEL_FILE) as engine:
        golden = compute_golden(engine, (1, 2))
    registry = open_registry_writer(base / "registry", create=True)
    for version in ("2.0.0", "3.0.0"):
        registry.publish_version(MODEL, version, _build(base, version, private_key, golden))
    first = _build(base, "1.0.0", private_key, golden)
    frames = base / "frames"
    frames.mkdir()
    for name in ("cat.bmp", "parrot.jpg", "grace_hopper.bmp"):
        shutil.copy(CORAL / name, frames / name)
    agent = {"model": MODEL, "source": {"kind": "images", "path": str(frames), "max_fps": fps},
             "telemetry": {"summary_interval_s": 1.0}, "status": {"interval_s": 0.5}, "swap": {"watch_interval_s": 0.3},
             "drain_timeout_s": 3}
    fleet = SimulatedFleet(base / "fleet", devices, agent=agent)
    for device in fleet.devices.values():
        save_public_key(public_key, device.root / "keys" / "release.pub")
        store = ModelStore(device.root, public_key=public_key)
        store.install(first)
        store.activate(MODEL, "1.0.0")

    def params(**overrides: object) -> RolloutParams:
        document = {"inventory": str(fleet.inventory_path), "registry": str(base / "registry"), "model": MODEL,
                    "public_key": str(public_key_file), "work_dir": str(base / "work"), "max_parallel": devices,
                    "health": {"timeout_s": 120, "poll_interval_s": 0.5, "source": "agent"},
                    # the same model in every version: the canary judges it quickly (this bench times the SSH side)
                    "canary": {"min_live_inferences": 3, "min_samples": 20, "min_error_samples": 20}}
        document.update(overrides)
        return RolloutParams.model_validate(document)

    with fleet, prefect_test_harness(server_startup_timeout=120):
        fleet.wait_agents(lambda s: s.state == "running" and s.version == "1.0.0", timeout_s=180)
        started = time.perf_counter()
        for device_id in fleet.devices:
            rollout(params(version="2.0.0", target={"ids": [device_id]}, waves=[1], rollout_id=f"seq-{device_id}"))
        sequential_s = time.perf_counter() - started

        started = time.perf_counter()
        waves = rollout(params(version="3.0.0", waves=[1, "25%", "100%"], rollout_id="waves"))
        waves_s = time.perf_counter() - started
        repeat = rollout(params(version="3.0.0", waves=[1, "25%", "100%"], rollout_id="repeat"))

        record = registry.get_json(rollout_key("waves"))
        healthy = sorted(d["healthy_after_s"] for d in record["devices"].values())
        model_size = (base / "builds" / "3.0.0" / "model_cpu.tflite").stat().st_size
        sent_first = waves.bytes_transferred
        return {
            "devices": devices, "agent_fps": fps,
            "sequential_single_device_rollouts_s": round(sequential_s, 1),
            "waves_rollout_s": round(waves_s, 1),
            "ratio": round(waves_s / sequential_s, 3), "goal_ratio": GOAL_RATIO,
            "wave_sizes": [len(w) for w in record["waves"]],
            "bytes_first_rollout": sent_first, "model_bytes_per_device": model_size,
            "bytes_repeat_rollout": repeat.bytes_transferred,
            "activation_to_healthy_s": {"p50": round(statistics.median(healthy), 2),
                                        "p95": round(healthy[int(0.95 * (len(healthy) - 1))], 2),
                                        "max": round(healthy[-1], 2)},
            "all_done": waves.done == devices and repeat.done == devices,
            "waves_step_seconds_max": {name: round(max(step["seconds"] for d in record["devices"].values()
                                                       for step in d["steps"] if step["name"] == name), 2)
                                       for name in ("connect", "preflight", "upload", "verify", "activate", "health")},
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--fps", type=float, default=2.0, help="agent frame rate (2 cores shared by all agents)")
    args = parser.parse_args(argv if argv is not None else [])
    logging.basicConfig(level=logging.WARNING)
    if not CORAL.is_dir():
        print(f"rollout bench: {CORAL} missing, skipped")  # noqa: T201 - a benchmark reports on stdout
        return 0
    with tempfile.TemporaryDirectory(prefix="rollout-bench-") as temp:
        results = run(args.devices, args.fps, Path(temp))
    ok = results["ratio"] <= GOAL_RATIO and results["bytes_repeat_rollout"] == 0 and results["all_done"]
    print(json.dumps({"rollout_bench": results, "goals_met": ok}, indent=2))  # noqa: T201
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
