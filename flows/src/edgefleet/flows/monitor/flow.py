"""`fleet-monitor`: the fleet monitor (`edgefleet.monitor`) run as a long-lived Prefect flow.

The monitor itself is a plain callable (`run_monitor`); this flow only gives it a deployment, so a process
worker can keep it running and the Prefect UI shows it. Cancelling the flow run (the worker sends SIGTERM)
stops it cleanly: the batch in hand is committed and acked first.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
from pathlib import Path

from prefect import flow, get_run_logger
from pydantic import BaseModel, ConfigDict, Field

from edgefleet.monitor.config import load_monitor_config
from edgefleet.monitor.service import run_monitor

FLOW_NAME = "fleet-monitor"


class FleetMonitorParams(BaseModel):
    """Where the monitor's configuration is; None values keep what the file (or the defaults) say."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    config: str | None = Field(default=None, description="monitor YAML (or a pipeline.yaml with a monitor: key)")
    project: str | None = Field(default=None, description="Google Cloud project (overrides the file)")
    subscription: str | None = Field(default=None, description="fleet-monitor subscription (overrides the file)")
    store_path: str | None = Field(default=None, description="fleet state SQLite file (overrides the file)")
    run_for_s: float | None = Field(default=None, gt=0,
                                    description="stop after this long (a scheduled catch-up run); empty: until "
                                                "the flow run is cancelled")


@flow(name=FLOW_NAME)
def fleet_monitor(params: FleetMonitorParams = FleetMonitorParams()) -> dict:
    """Ingests telemetry into the fleet state until the flow run is cancelled; returns the final counters."""
    logger = get_run_logger()
    config = load_monitor_config(Path(params.config).expanduser() if params.config else None,
                                 project=params.project, subscription=params.subscription,
                                 store_path=params.store_path)
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    logger.info("fleet monitor: projects/%s/subscriptions/%s -> %s", config.project, config.subscription,
                config.store_path)
    timer = threading.Timer(params.run_for_s, stop.set) if params.run_for_s else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        report = run_monitor(config, stop)
    finally:
        if timer is not None:
            timer.cancel()
    logger.info("fleet monitor stopped: %s", report)
    return dataclasses.asdict(report)
