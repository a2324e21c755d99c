"""The pull rollout with real agents in pull mode (no SSH used): each follows the signed channel pointer of a
local registry every half second, and reports through the Pub/Sub emulator to a running fleet monitor.

A good release reaches 100% in two judged waves; a bad one (a much slower model that passes the device's
smoke test) is halted in its first wave by the canary judge, and the signed share 0 sends the moved
devices back to the version it replaced, while the devices never moved stay where they were. A model whose
answers are unrelated to the running one's (the demo's shuffled-labels model: Coral's bird classifier) is stopped
by the shadow wave (issue 25): the first wave's devices run it beside their model, from a signed shadow share,
and the pairs their telemetry carries to the monitor fail it before any device activates it. A fleet whose
maintenance window is closed waits for it, and a device whose window opens only after the last wave passed is
still watched and judged (the window stragglers, `pull_stragglers.py`) before the rollout completes.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgefleet.device.runtime.engine import Engine
from edgefleet.device.runtime.golden import compute_golden
from edgefleet.device.store import ModelStore
from edgefleet.flows.registry import open_registry_writer
from edgefleet.flows.release.bundle import create_version_dir
from edgefleet.flows.trust.release_key import public_key_path
from edgefleet.kernel.trust.signatures import generate_keypair, save_private_key, save_public_key
from edgefleet.local.emulators import PubSubEmulator
from edgefleet.local.fleet import SimulatedFleet
from edgefleet.local.stack import FleetSpec, LocalStack, MonitorSpec, PubSubSpec, StackSpec, local_stack

MODEL = "imagenet"
MODEL_FILE = "mobilenet_v1_0.25_128_quant.tflite"
SLOW_MODEL_FILE = "mobilenet_v2_1.0_224_quant.tflite"
UNRELATED_MODEL_FILE = "mobilenet_v2_1.0_224_inat_bird_quant.tflite"
GOLDEN_SEEDS = (1, 2)
DEVICES = 5
AGENT_TIMEOUT_S = 300  # agents come up and activate slowly on a loaded machine; the waits end on the condition
WAVE_TIMEOUT_S = 300.0  # a wave's report and canary waits (see PullWorld.params)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]


@dataclass
class PullWorld:
    coral: Path
    private_key: Ed25519PrivateKey
    stack: LocalStack

    @property
    def base(self) -> Path:
        return self.stack.spec.workdir

    @property
    def registry_dir(self) -> Path:
        return self.stack.registry_dir

    @property
    def private_key_path(self) -> Path:
        return self.stack.keys.release_key

    @property
    def public_key_path(self) -> Path:
        return self.stack.keys.release_public_key

    @property
    def monitor_config(self) -> Path:
        return self.stack.monitor_config_path

    @property
    def fleet(self) -> SimulatedFleet:
        assert self.stack.fleet is not None, "the pull world's stack has a fleet"
        return self.stack.fleet

    def publish(self, version: str, *, slow: bool = False, unrelated: bool = False) -> None:
        _publish(self.coral, self.private_key, self.stack.spec, version, slow=slow, unrelated=unrelated)

    def params(self, version: str, **overrides: object):  # -> PullRolloutParams
        from edgefleet.flows.rollout.pull_params import PullRolloutParams

        document: dict[str, object] = {
            "registry": str(self.registry_dir), "model": MODEL, "version": version, "channel": "stable",
            "schedule": {"kind": "shares", "shares": ["20%", "100%"]}, "first_wave_min": 1,
            "monitor_config": str(self.monitor_config), "public_key": str(self.public_key_path),
            "signing": {"key_file": str(self.private_key_path)},
            # generous waits: on a loaded CI machine a wave's devices took more than 90 s to download, verify and
            # report (3 of 5 in once); the waits end as soon as the devices report, so a quiet run is as fast
            "canary": {"min_samples": 20, "min_error_samples": 40, "timeout_s": WAVE_TIMEOUT_S},
            "report_timeout_s": WAVE_TIMEOUT_S, "poll_interval_s": 0.5, "stale_after_s": WAVE_TIMEOUT_S,
        }
        document.update(overrides)
        return PullRolloutParams.model_validate(document)

    def current(self, device_id: str) -> str | None:
        return ModelStore(self.fleet.devices[device_id].root).pointer(MODEL, "current")


def _publish(coral: Path, private_key: Ed25519PrivateKey, spec: StackSpec, version: str, *, slow: bool = False,
             unrelated: bool = False) -> None:
    model_file = UNRELATED_MODEL_FILE if unrelated else SLOW_MODEL_FILE if slow else MODEL_FILE
    labels = coral / ("inat_bird_labels.txt" if unrelated else "imagenet_labels.txt")
    with Engine.open(coral / model_file) as engine:
        golden = compute_golden(engine, GOLDEN_SEEDS)
    dest = spec.workdir / "builds" / version
    model_bytes = (coral / model_file).read_bytes() + b"\0" * 16 + f"edgefleet-build:{version}".encode()
    create_version_dir(dest, {"model_cpu.tflite": model_bytes, "labels.txt": labels},
                       private_key=private_key, model=MODEL, version=version, golden=golden)
    open_registry_writer(spec.registry_dir).publish_version(MODEL, version, dest)


@pytest.fixture(scope="module")
def pull_world(coral_data: Path, pubsub_emulator: PubSubEmulator,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[PullWorld]:
    """The local stack (`edgefleet.local.stack`) on the session's emulator, in a project of its own: 5 pull-mode
    devices following the signed `stable` channel (1.0.0 when they start), a running fleet monitor."""
    base = tmp_path_factory.mktemp("pull-rollout")
    project = f"pull-rollout-{uuid.uuid4().hex[:8]}"
    spec = StackSpec(workdir=base, project=project, pubsub=PubSubSpec(host=pubsub_emulator.host),
                     monitor=MonitorSpec(count_bucket_s=1.0, ingest_batch_max_wait_s=0.2))
    private_key, public_key = generate_keypair()  # the stack keeps a key file it finds (no development key)
    save_private_key(private_key, spec.release_key)
    save_public_key(public_key, public_key_path(spec.release_key))
    spec.registry_dir.mkdir(parents=True)
    _publish(coral_data, private_key, spec, "1.0.0")
    open_registry_writer(spec.registry_dir).promote(MODEL, "1.0.0", "stable", signing_key=private_key)
    frames = base / "frames"
    frames.mkdir()
    for name in ("cat.bmp", "parrot.jpg", "grace_hopper.bmp"):
        shutil.copy(coral_data / name, frames / name)
    agent = {
        "model": MODEL, "source": {"kind": "images", "path": str(frames), "max_fps": 5},
        "telemetry": {"mode": "summary", "summary_interval_s": 0.5, "pubsub_project": project,
                      "publish_timeout_s": 5},
        "status": {"interval_s": 0.5}, "swap": {"watch_interval_s": 0.3}, "drain_timeout_s": 3,
        "registry": {"uri": str(spec.registry_dir), "channel": "stable", "poll_interval_s": 0.5},
        "shadow": {"share": 0.5, "report_interval_s": 0.5},  # runs a candidate only when a rollout names one
    }
    fleet = FleetSpec(devices=DEVICES, device_prefix="pull", agent=agent, ready_timeout_s=AGENT_TIMEOUT_S)
    with local_stack(spec.model_copy(update={"fleet": fleet})) as stack:
        world = PullWorld(coral_data, private_key, stack)
        world.fleet.wait_agents(lambda s: s.state == "running" and s.version == "1.0.0" and s.frames > 3,
                                timeout_s=AGENT_TIMEOUT_S)
        _wait_monitor_sees(world, DEVICES)
        yield world


def _wait_monitor_sees(world: PullWorld, count: int) -> None:
    """The pull rollout's fleet is the devices the monitor has heard from: an agent running is not yet one the
    monitor knows (its first telemetry is still on the way on a loaded machine, and a rollout started then took
    2 of the 5 devices as the fleet). Waits until the monitor knows every device."""
    from edgefleet.flows.rollout.pull_tasks import MonitorView
    from edgefleet.monitor.errors import FleetStateError

    view, deadline = MonitorView(str(world.monitor_config), MODEL), time.monotonic() + AGENT_TIMEOUT_S
    while True:
        try:
            seen = view.versions(WAVE_TIMEOUT_S)
        except FleetStateError:  # the monitor has not made its fleet state yet
            seen = {}
        if len(seen) >= count:
            return
        assert time.monotonic() < deadline, f"the monitor knows {sorted(seen)} of {count} devices"
        time.sleep(0.5)


def test_a_good_release_reaches_the_whole_fleet_wave_by_wave(pull_world: PullWorld) -> None:
    from edgefleet.flows.registry import open_registry_writer as writer
    from edgefleet.flows.rollout.pull_flow import pull_rollout
    from edgefleet.flows.rollout.record import RecordStore

    pull_world.publish("1.1.0")
    result = pull_rollout(pull_world.params("1.1.0"))
    assert result.state == "completed", result.halted_reason
    assert result.done == DEVICES
    pull_world.fleet.wait_agents(lambda s: s.version == "1.1.0", timeout_s=AGENT_TIMEOUT_S)
    record = RecordStore(writer(pull_world.registry_dir), "imagenet-1.1.0").load()
    assert record.pull.passed[-1] == 10_000 and len(record.pull.passed) == 2
    assert record.verdicts and all(item.verdict.result == "pass" for item in record.verdicts)
    assert record.verdicts[0].verdict.control.startswith("concurrent"), record.verdicts[0].verdict.control
    # re-running the same rollout resumes after the last passed wave: here nothing is left, nothing is signed
    counter = writer(pull_world.registry_dir).read_channel(MODEL, "stable").pointer.counter
    again = pull_rollout(pull_world.params("1.1.0"))
    assert (again.state, again.done) == ("completed", DEVICES)
    assert writer(pull_world.registry_dir).read_channel(MODEL, "stable").pointer.counter == counter
    assert RecordStore(writer(pull_world.registry_dir), "imagenet-1.1.0").load().runs == 2


def test_a_bad_release_is_halted_in_its_first_wave_and_the_moved_devices_go_back(pull_world: PullWorld) -> None:
    from edgefleet.flows.registry import open_registry_writer as writer
    from edgefleet.flows.rollout.flow import RolloutHalted
    from edgefleet.flows.rollout.pull_flow import pull_rollout
    from edgefleet.flows.rollout.record import RecordStore

    before = {device: pull_world.current(device) for device in pull_world.fleet.devices}
    assert len(set(before.values())) == 1, before  # the whole fleet on one version (1.1.0 after the test above)
    pull_world.publish("1.2.0", slow=True)
    with pytest.raises(RolloutHalted) as halted:  # a first wave of 3 (the default): 1 device was not enough to
        # tell a slow model from a loaded host, and the release passed wave 1 once on a loaded machine
        pull_rollout(pull_world.params("1.2.0", first_wave_min=3))
    record = RecordStore(writer(pull_world.registry_dir), "imagenet-1.2.0").load()
    assert record.halted.wave == 1 and record.pull.sent_back and "latency" in record.halted.halted_by, \
        record.halted
    moved = record.waves[0]
    assert moved and len(moved) < DEVICES
    assert {device: pull_world.current(device) for device in pull_world.fleet.devices} == before
    assert all(record.devices[device].state == "rolled_back" for device in moved)
    assert halted.value.result.state == "halted"
    pointer = writer(pull_world.registry_dir).read_channel(MODEL, "stable").pointer
    assert (pointer.rollout.share_bp, pointer.rollout.replaces) == (0, before[moved[0]])
    # the moved devices took the slow version first, and their floor went back down with the signed send-back
    assert all(record.devices[device].after == before[device] for device in moved)
    assert all(ModelStore(pull_world.fleet.devices[device].root).floor(MODEL).version == before[device]
               for device in moved)


def test_an_unrelated_model_is_stopped_by_the_pull_shadow_wave_before_any_device_acts_on_it(
        pull_world: PullWorld) -> None:
    from edgefleet.flows.registry import open_registry_writer as writer
    from edgefleet.flows.rollout.flow import RolloutHalted
    from edgefleet.flows.rollout.pull_flow import pull_rollout
    from edgefleet.flows.rollout.record import RecordStore

    before = {device: pull_world.current(device) for device in pull_world.fleet.devices}
    assert len(set(before.values())) == 1, before
    pull_world.publish("1.3.0", unrelated=True)
    with pytest.raises(RolloutHalted, match="shadow wave"):
        pull_rollout(pull_world.params("1.3.0", first_wave_min=2, shadow={
            "enabled": True, "timeout_s": WAVE_TIMEOUT_S, "poll_interval_s": 0.5}))
    record = RecordStore(writer(pull_world.registry_dir), "imagenet-1.3.0").load()
    shadowed = record.pull.shadow.devices
    assert record.pull.shadow.result == "fail" and len(shadowed) >= 2, record.pull.shadow
    assert "shadow_agreement" in record.halted.halted_by, record.halted
    assert not record.pull.passed and not record.waves  # no wave ran: nobody was moved
    assert {device: pull_world.current(device) for device in pull_world.fleet.devices} == before
    for device_id, device in pull_world.fleet.devices.items():
        store = ModelStore(device.root)
        assert (store.installed(MODEL, "1.3.0") is not None) == (device_id in shadowed), device_id
    pointer = writer(pull_world.registry_dir).read_channel(MODEL, "stable").pointer
    assert (pointer.rollout.share_bp, pointer.rollout.shadow_bp) == (0, None)  # the shadow is called off
    deadline = time.monotonic() + AGENT_TIMEOUT_S
    while any(ModelStore(pull_world.fleet.devices[d].root).pointer(MODEL, "shadow") for d in shadowed):
        assert time.monotonic() < deadline, "the shadow wave's devices still name the candidate"
        time.sleep(0.5)


NIGHT_REPORT_TIMEOUT_S = 5.0  # short: a watch that counted it from the wave's start would halt within seconds


def _restart_agents(world: PullWorld, window: dict[str, object] | None, devices: list[str] | None = None) -> None:
    """Restarts the agents of `devices` (default all) with `window` as their maintenance window (None: none), and
    waits for the new ones."""
    registry = {key: value for key, value in world.fleet.agent["registry"].items() if key != "window"}
    world.fleet.agent["registry"] = registry | ({"window": window} if window else {})
    chosen = list(world.fleet.devices) if devices is None else devices
    pids = {device_id: world.fleet.start_agent(device_id) for device_id in chosen}
    world.fleet.wait_agents(lambda s: s.pid == pids[s.device_id] and s.state == "running" and s.frames > 3,
                            timeout_s=AGENT_TIMEOUT_S, device_ids=chosen)


def test_a_rollout_whose_first_wave_is_outside_its_window_waits_for_it_and_goes_on_when_it_opens(
        pull_world: PullWorld) -> None:
    """The whole fleet's window is closed: the first wave waits for it. Then it opens for all but one device of the
    last wave (the straggler): the last wave is judged on its quorum, and the rollout does not complete until the
    straggler's window opened too and it was watched and judged."""
    from datetime import UTC, datetime, timedelta

    from edgefleet.flows.registry import open_registry_writer as writer
    from edgefleet.flows.rollout.pull_flow import pull_rollout
    from edgefleet.flows.rollout.pull_stragglers import STRAGGLER_STEP
    from edgefleet.flows.rollout.pull_waves import moved
    from edgefleet.flows.rollout.record import RecordStore
    from edgefleet.monitor import load_monitor_config, open_fleet_store
    from edgefleet.monitor.aggregates import set_tags

    devices = sorted(pull_world.fleet.devices)
    before = {device: pull_world.current(device) for device in devices}
    assert len(set(before.values())) == 1, before
    opens = datetime.now(UTC) + timedelta(hours=12)  # the night window: closed for the next 11 hours
    night = {"cron": f"{opens.minute} {opens.hour} * * *", "timezone": "UTC", "duration_minutes": 60}
    first_wave_min, rollout_id = 2, "imagenet-1.4.0"
    outcome: dict[str, object] = {}
    closed = set(devices)  # the agents that have the night window
    try:
        _restart_agents(pull_world, night)
        with open_fleet_store(load_monitor_config(pull_world.monitor_config), create=False) as store:
            for device in devices:  # the group, as `edgefleet fleet tag DEVICE --add night` names it
                set_tags(store.connection, device, add=["night"])
            store.connection.commit()
        pull_world.publish("1.4.0")
        params = pull_world.params("1.4.0", first_wave_min=first_wave_min, report_timeout_s=NIGHT_REPORT_TIMEOUT_S,
                                   windows=[{"tags": ["night"], "window": night}])

        def run() -> None:
            try:
                outcome["result"] = pull_rollout(params)
            except Exception as error:  # noqa: BLE001 - the test asserts on it
                outcome["error"] = error

        _wait_monitor_sees(pull_world, DEVICES)  # the rollout's fleet is all five (once a restart left it 4)
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        signed_at = _wait_for_share(pull_world, rollout_id, thread)
        pointer = writer(pull_world.registry_dir).read_channel(MODEL, "stable").pointer
        assert pointer.rollout is not None
        first_wave = moved(rollout_id, devices, pointer.rollout.share_bp)
        last_wave = [d for d in devices if d not in first_wave]
        straggler = last_wave[0]  # its window stays closed when the others' open: the last wave's quorum reports
        assert len(last_wave) - 1 >= first_wave_min, last_wave
        while time.monotonic() - signed_at < 4 * NIGHT_REPORT_TIMEOUT_S:  # the report timeout passes, 4 times
            assert thread.is_alive(), outcome
            time.sleep(0.5)
        assert thread.is_alive() and not outcome, outcome  # not halted: its devices wait for their window
        assert {device: pull_world.current(device) for device in devices} == before  # none moved outside it
        _restart_agents(pull_world, None, sorted(closed - {straggler}))  # their window opens, not the straggler's
        closed = {straggler}
        _wait_for_last_wave(pull_world, rollout_id, thread, first_wave)
        # the last wave passed without the straggler: the rollout watches it, it does not complete
        assert thread.is_alive() and not outcome, outcome
        assert pull_world.current(straggler) == before[straggler]  # its window is still closed
    finally:
        _restart_agents(pull_world, None, sorted(closed))  # the window opens (the module's agents as they were)
    thread.join(AGENT_TIMEOUT_S + 4 * WAVE_TIMEOUT_S)
    assert not thread.is_alive() and "error" not in outcome, outcome
    result = outcome["result"]
    assert result.state == "completed", result.halted_reason
    record = RecordStore(writer(pull_world.registry_dir), rollout_id).load()
    assert record is not None
    assert record.verdicts and all(item.verdict.result == "pass" for item in record.verdicts), record.verdicts
    assert all(record.devices[device].state == "done" for device in devices), record.table()
    # the straggler was watched and judged after the last wave, its own verdict and step in the record
    assert record.verdicts[-1].devices == (straggler,), record.verdicts
    assert record.verdicts[-1].verdict.reason.startswith("window stragglers after wave 2"), record.verdicts[-1]
    assert record.devices[straggler].steps[-1].name == STRAGGLER_STEP, record.devices[straggler].steps
    assert record.devices[straggler].activated_at is not None
    pull_world.fleet.wait_agents(lambda s: s.version == "1.4.0", timeout_s=AGENT_TIMEOUT_S)


def _wait_for_last_wave(world: PullWorld, rollout_id: str, thread: threading.Thread, first_wave: list[str]) -> None:
    """Waits until the rollout's record says its last wave (100 %) passed, or the rollout ended; its first wave must
    be `first_wave` (else the rollout's fleet was not the one the test planned its straggler in)."""
    from edgefleet.flows.registry import open_registry_writer as writer
    from edgefleet.flows.rollout.record import RecordStore

    deadline = time.monotonic() + AGENT_TIMEOUT_S + 4 * WAVE_TIMEOUT_S
    while thread.is_alive():
        record = RecordStore(writer(world.registry_dir), rollout_id).load()
        if record is not None and record.waves:
            assert record.waves[0] == first_wave, ("the rollout's fleet was not all the devices", record.waves)
        if record is not None and record.pull is not None and record.pull.passed[-1:] == [10_000]:
            return
        assert time.monotonic() < deadline, "the rollout's last wave did not pass"
        time.sleep(0.5)


def _wait_for_share(world: PullWorld, rollout_id: str, thread: threading.Thread) -> float:
    """Waits until the rollout signed its first share; returns when (monotonic)."""
    from edgefleet.flows.registry import open_registry_writer as writer

    deadline = time.monotonic() + AGENT_TIMEOUT_S
    while True:
        pointer = writer(world.registry_dir).read_channel(MODEL, "stable").pointer
        if pointer.rollout is not None and pointer.rollout.id == rollout_id and pointer.rollout.share_bp > 0:
            return time.monotonic()
        assert thread.is_alive() and time.monotonic() < deadline, "the rollout did not sign its first share"
        time.sleep(0.5)
