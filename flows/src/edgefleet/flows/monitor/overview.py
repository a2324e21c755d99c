"""`fleet-overview`: the fleet overview as a Prefect markdown artifact (and optionally an HTML file).

A scheduled deployment runs it (every few minutes in `make sandbox`); the artifact, key
`fleet-overview-<model>`, shows the devices per version over time and the latency and top-1 score
distributions per version as tables with text bars (Prefect artifacts are Markdown, so no images).
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from edgefleet.kernel.contracts.layout import check_name
from edgefleet.kernel.contracts.names import ModelName
from edgefleet.monitor import load_monitor_config, open_fleet_store
from edgefleet.monitor.overview import FleetOverview, fleet_overview
from edgefleet.monitor.overview_render import to_html, to_markdown
from edgefleet.monitor.query import fleet_status
from edgefleet.monitor.spotcheck_report import read_spot_check_report

FLOW_NAME = "fleet-overview"


class FleetOverviewParams(BaseModel):
    """Which fleet state, which model, and where to also write the HTML page."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    config: str | None = Field(default=None, description="monitor YAML (its store_path is the fleet state)")
    model: ModelName = Field(default="shapes", description="the model whose fleet is shown")
    since_s: float | None = Field(default=None, gt=0, description="only the last this many seconds; empty: all "
                                                                   "the monitor keeps")
    html: str | None = Field(default=None, description="also write the self-contained HTML page here")


def artifact_key(model: str) -> str:
    # Prefect artifact keys: lowercase letters, digits and dashes.
    return f"fleet-overview-{check_name('model', model)}".replace("_", "-").replace(".", "-")


@task(name="read-fleet-overview", cache_policy=NO_CACHE)
def read_overview(params: FleetOverviewParams) -> FleetOverview:
    config = load_monitor_config(Path(params.config).expanduser() if params.config else None)
    now = datetime.fromtimestamp(time.time()).astimezone()
    since = datetime.fromtimestamp(now.timestamp() - params.since_s).astimezone() if params.since_s else None
    with open_fleet_store(config, create=False) as store:
        # The overview reads the counts (kept on ingest), not the device list: one page is plenty.
        status = fleet_status(store, config.status.stale_after_s, now, rules=config.status,
                              limit=config.status.page_size)
        # the labelled spot check of the devices on that page (issue 25), shown per version
        status = status.model_copy(update={"spot_check": read_spot_check_report(config, status.devices)})
        return fleet_overview(store, status, params.model, now, since)


@task(name="write-fleet-overview-html", cache_policy=NO_CACHE)
def write_html(overview: FleetOverview, path: str) -> str:
    target = Path(path).expanduser()
    target.write_text(to_html(overview))
    return str(target)


@flow(name=FLOW_NAME)
def fleet_overview_flow(params: FleetOverviewParams = FleetOverviewParams()) -> str:
    """Publishes the fleet overview of `params.model` as a markdown artifact; returns its key."""
    overview = read_overview(params)
    key = artifact_key(params.model)
    create_markdown_artifact(markdown=to_markdown(overview), key=key,
                             description=f"fleet overview of {params.model}")
    if params.html:
        write_html(overview, params.html)
    return key
