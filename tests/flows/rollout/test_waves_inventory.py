"""fleet.yaml validation, wave planning and the health verdicts (pure, fast)."""

from __future__ import annotations

import pytest

from edgefleet.flows.fleet.inventory import load_inventory, parse_inventory
from edgefleet.flows.rollout.freshness import DeviceClock
from edgefleet.flows.rollout.health import StatusBaseline, monitor_verdict, status_verdict
from edgefleet.flows.rollout.params import LivenessCheck, RolloutParams
from edgefleet.flows.rollout.waves import plan_waves, wave_over_threshold
from edgefleet.kernel.errors import ConfigError
from edgefleet.monitor import DeviceVersionHealth


def _doc(**device):
    return {"known_hosts": "kh", "defaults": {"user": "pi", "key_file": "id_ed25519"},
            "devices": [{"id": "cam-1", "host": "10.0.0.1", "tags": ["canary"]},
                        {"id": "cam-2", "host": "h2", **device}]}


def test_inventory_applies_defaults_and_resolves_paths_against_its_file(tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_text("known_hosts: kh\ndefaults: {user: pi, key_file: keys/id}\n"
                    "devices:\n  - {id: cam-1, host: a, tags: [canary]}\n"
                    "  - {id: cam-2, host: b, port: 2222, user: ops}\n")
    inventory = load_inventory(path)
    assert inventory.known_hosts == tmp_path / "kh"
    assert [(d.id, d.user, d.port, d.key_file) for d in inventory.devices] == [
        ("cam-1", "pi", 22, tmp_path / "keys/id"), ("cam-2", "ops", 2222, tmp_path / "keys/id")]
    assert [d.id for d in inventory.select(tags=["canary"])] == ["cam-1"]
    assert [d.id for d in inventory.select()] == ["cam-1", "cam-2"]


@pytest.mark.parametrize(("device", "named"), [
    ({"port": 70000}, "key 'port'"),
    ({"colour": "red"}, "unknown key 'colour'"),
    ({"host": ""}, "key 'host'"),
    ({"id": "Bad Id"}, "key 'id'"),
])
def test_inventory_errors_name_the_device_and_the_field(device, named):
    with pytest.raises(ConfigError) as error:
        parse_inventory(_doc(**device))
    assert named in error.value.message and "devices[1]" in error.value.message


def test_inventory_refuses_passwords_duplicates_missing_known_hosts_and_unknown_ids():
    with pytest.raises(ConfigError, match="password"):
        parse_inventory(_doc(password="hunter2"))
    with pytest.raises(ConfigError, match="appears twice"):
        parse_inventory(_doc(id="cam-1"))
    document = _doc()
    del document["known_hosts"]
    with pytest.raises(ConfigError, match="known_hosts"):
        parse_inventory(document)
    with pytest.raises(ConfigError, match="cam-9"):
        parse_inventory(_doc()).select(ids=["cam-9"])


def test_waves_are_cumulative_and_end_with_every_device():
    ids = [f"d{i}" for i in range(20)]
    assert [len(w) for w in plan_waves(ids, [1, "25%", "100%"])] == [1, 4, 15]
    assert [len(w) for w in plan_waves(ids, [1, "10%", "50%"])] == [1, 1, 8, 10]  # the rest always follows
    assert plan_waves(["a", "b"], [1, "10%", "100%"]) == [["a"], ["b"]]  # empty waves dropped
    assert sum(plan_waves(ids, [3, 3, "50%"]), []) == ids
    assert wave_over_threshold(1, 10, 0.0) and not wave_over_threshold(1, 10, 0.1) and wave_over_threshold(2, 10, 0.1)


@pytest.mark.parametrize("waves", [[0], ["0%"], ["150%"], ["ten"], [True]])
def test_bad_waves_are_refused(waves):
    with pytest.raises(ValueError, match="wave"):
        RolloutParams(inventory="f", registry="r", model="m", version="1.0.0", waves=waves, public_key="release.pub")


def _health(**fields):
    base = dict(device_id="d", known=True, running_version="2.0.0", last_seen=None, inferences=50, errors=0,
                error_events=0, swap_failures=0, rollbacks=0, latency_p50_ms=5.0, latency_p95_ms=8.0)
    return DeviceVersionHealth(**{**base, **fields})


def test_monitor_verdicts_only_ask_whether_the_device_came_up():
    gate = LivenessCheck(min_live_inferences=20)
    assert monitor_verdict(_health(), gate).state == "pass"
    assert monitor_verdict(_health(inferences=10), gate).state == "wait"
    assert monitor_verdict(_health(known=False, inferences=0), gate).state == "wait"
    assert monitor_verdict(_health(swap_failures=1), gate).state == "fail"
    assert monitor_verdict(_health(rollbacks=1), gate).state == "fail"
    assert monitor_verdict(_health(inferences=30, errors=30), gate).state == "fail"
    # Latency and error ratios are the canary judge's, per wave: a slow or erring device is still "up".
    assert monitor_verdict(_health(latency_p95_ms=80.0, errors=10), gate).state == "pass"


def _status(**fields):
    from edgefleet.kernel.contracts.status import AgentStatus

    base = {"device_id": "d", "pid": 1, "state": "running", "started_at": "1970-01-12T13:00:00+00:00",
            "updated_at": "1970-01-12T13:46:39+00:00", "version": "2.0.0", "frames": 130, "swap_failures": 1,
            "version_frames": 25}
    return AgentStatus.model_validate({**base, **fields})


def test_status_verdicts_count_swap_failures_from_the_baseline():
    gate = LivenessCheck(min_live_inferences=10, status_max_age_s=5)
    now = DeviceClock(1_000_000.0)  # no boot stamp in these statuses: judged on the device's wall clock
    assert status_verdict(_status(version_frames=5), "2.0.0", StatusBaseline(1), gate, now).state == "wait"
    assert status_verdict(_status(), "2.0.0", StatusBaseline(1), gate, now).state == "pass"
    assert status_verdict(_status(), "2.0.0", StatusBaseline(0), gate, now).state == "fail"
    assert status_verdict(_status(), "2.0.0", StatusBaseline(1), gate,
                          DeviceClock(1_000_060.0)).state == "wait"
    assert status_verdict(_status(version="1.0.0"), "2.0.0", None, gate, now).state == "wait"
    assert status_verdict(_status(version_frames=0, version_errors=12), "2.0.0", StatusBaseline(1), gate,
                          now).state == "fail"


def test_status_of_a_newer_agent_is_read_with_unknown_fields_ignored():
    assert _status(future_field=1).version == "2.0.0"


def test_random_wave_order_is_seeded_and_inventory_order_stays_as_listed():
    from edgefleet.flows.rollout.waves import wave_order

    ids = [f"d{i}" for i in range(50)]
    assert wave_order(ids, "random", 7) == wave_order(ids, "random", 7) != ids
    assert wave_order(ids, "random", 7) != wave_order(ids, "random", 8)
    assert sorted(wave_order(ids, "random", 7)) == sorted(ids)
    assert wave_order(ids, "inventory", 7) == ids


def test_first_wave_has_three_devices_where_the_fleet_keeps_controls_and_the_holdback_waits_for_the_last():
    ids = [f"d{i}" for i in range(100)]
    plan = plan_waves(ids, [1, "10%", "50%", "100%"], first_wave_min=3, holdback=10, keep_outside=3)
    assert [len(w) for w in plan] == [3, 7, 40, 50]
    assert set(ids[-10:]) <= set(plan[-1])  # the holdback: on the old version until the last wave
    assert [len(w) for w in plan_waves(ids[:3], [1, "100%"], first_wave_min=3, keep_outside=3)] == [1, 2]
    assert [len(w) for w in plan_waves(ids[:8], [1, "100%"], first_wave_min=3, keep_outside=3)] == [3, 5]


def test_the_rollout_records_its_wave_seed_and_a_rerun_plans_the_same_waves():
    from edgefleet.flows.rollout.flow import _plan
    from edgefleet.flows.rollout.record import RolloutRecord

    params = RolloutParams(inventory="fleet.yaml", registry="reg", model="m", version="1.0.0", public_key="release.pub")
    record = RolloutRecord(rollout_id="m-1.0.0", model="m", version="1.0.0", manifest_sha256="0" * 64)
    ids = [f"d{i}" for i in range(30)]
    first = _plan(record, params, ids)
    assert record.wave_seed is not None and len(first[0]) == 3 and first[0] != ids[:3]
    again = RolloutRecord.model_validate_json(record.model_dump_json())
    assert _plan(again, params, ids) == first


def test_the_default_agent_command_is_where_deploy_agent_installs_it():
    """A non-interactive SSH session's PATH has no venv on it: the default is the absolute path deploy-agent
    installs the device CLI at with its default install_dir (it was the bare name `edgefleet-agent`)."""
    import posixpath

    from edgefleet.flows.deploy_agent.params import DeployAgentParams

    (device, _) = parse_inventory(_doc()).devices
    install_dir = DeployAgentParams.model_fields["install_dir"].default
    assert posixpath.isabs(device.agent_command)
    # through `current`, the link deploy-agent points at the venv it installs and the updater switches: after a
    # self-update the device CLI is the running agent's, and sudo's rule (which names current/) still matches
    assert device.agent_command == posixpath.join(install_dir, "current", "bin", "edgefleet-agent")
