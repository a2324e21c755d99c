"""The `fleet-monitor` deployment's flow: a real Prefect run ingesting from the real emulator."""

from __future__ import annotations

import yaml
from monitor_helpers import telemetry

from edgefleet.flows.monitor.flow import FleetMonitorParams, fleet_monitor
from edgefleet.monitor.query import fleet_status
from edgefleet.monitor.store import open_store


def test_the_flow_ingests_telemetry_into_the_fleet_state_and_stops_when_its_time_is_up(
        prefect_api, telemetry_topic, monitor_config, tmp_path):
    for seq in (1, 2, 3):
        message = telemetry("cam-1", seq)
        telemetry_topic.publish(message)
    config_file = tmp_path / "monitor.yaml"
    config_file.write_text(yaml.safe_dump({"monitor": monitor_config.model_dump(mode="json")}))
    report = fleet_monitor(FleetMonitorParams(config=str(config_file), run_for_s=4.0))
    assert (report["applied"], report["malformed"], report["lost"]) == (3, 0, 0)
    with open_store(monitor_config.store_path, latency_window=8, count_bucket_s=60.0, create=False) as store:
        status = fleet_status(store, stale_after_s=1e9, now=telemetry("cam-1", 3).time)
    assert [device.device_id for device in status.devices] == ["cam-1"]
