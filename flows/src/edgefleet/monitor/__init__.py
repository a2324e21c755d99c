"""The fleet monitor: telemetry ingest, the fleet state, `fleet status`, the rollout's health gate.

- `edgefleet.monitor.service.run_monitor(config, stop_event)`: the long-running streaming-pull service.
- `edgefleet.monitor.ingest.apply / handle`: what one message does to the state (no Pub/Sub).
- `edgefleet.monitor.store.open_store`: the SQLite fleet state.
- `edgefleet.monitor.query.fleet_status / device_history`: reading it; `edgefleet.monitor.health.version_health`:
  the rollout's health gate.
- `edgefleet.monitor.cloud_metrics`: Cloud Monitoring custom metrics (`edgefleet.kernel.metrics`).

This package's top level imports neither Pub/Sub nor Cloud Monitoring, so readers stay light.
"""

from edgefleet.monitor.config import MonitorConfig, StatusRules, load_monitor_config
from edgefleet.monitor.errors import FleetStateError, MonitorError
from edgefleet.monitor.health import DeviceVersionHealth, VersionHealth, version_health
from edgefleet.monitor.ingest import Outcome, Status, apply, handle
from edgefleet.monitor.query import DeviceHistory, DeviceStatus, FleetStatus, device_history, fleet_status
from edgefleet.monitor.store import FleetStore, commit, open_fleet_store, open_store

__all__ = [
    "DeviceHistory", "DeviceStatus", "DeviceVersionHealth", "FleetStateError", "FleetStatus", "FleetStore",
    "MonitorConfig", "MonitorError", "Outcome", "Status", "StatusRules", "VersionHealth", "apply", "commit",
    "device_history", "fleet_status", "handle", "load_monitor_config", "open_store", "version_health",
    "open_fleet_store",
]
