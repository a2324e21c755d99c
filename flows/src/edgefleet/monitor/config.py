"""The fleet monitor's configuration: one strict pydantic model, read from YAML plus command-line overrides.

The file is either the monitor section itself or a whole edgefleet config with a `monitor:` mapping
(other top-level keys are then left to their own readers). Unknown keys inside the monitor section are
errors that name the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edgefleet.kernel.configfile import load
from edgefleet.kernel.contracts.layout import MONITOR_SUBSCRIPTION
from edgefleet.kernel.errors import EdgefleetError
from edgefleet.monitor.drift.config import DriftConfig
from edgefleet.monitor.store_engine import parse_store_url
from edgefleet.monitor.telemetry_verifier import IdentityConfig

DEFAULT_STORE_PATH = Path("~/.edgefleet/fleet.sqlite")
CONFIG_SECTION = "monitor"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StatusRules(_Section):
    """When a device counts as stale, silent or failing in `fleet status` and the fleet metrics."""

    stale_after_s: float = Field(default=120.0, gt=0, description="no message for this long: status 'stale'")
    silent_after_s: float = Field(default=600.0, gt=0,
                                  description="no message for this long: listed among the silent devices")
    failing_error_ratio: float = Field(default=0.05, ge=0, le=1,
                                       description="inference errors / inferences over the latency window "
                                                   "above which a device is 'failing'")
    failing_event_window_s: float = Field(default=900.0, gt=0,
                                          description="a swap_failed, rollback or error event this recent, and "
                                                      "not followed by a good swap or start, marks 'failing'")
    page_size: int = Field(default=100, ge=1, description="devices per page of `fleet status` (--limit)")


class IngestConfig(_Section):
    """Streaming pull and the batched commits behind it."""

    flow_control_max_messages: int = Field(default=1000, ge=1,
                                           description="messages leased but not yet acked, at most")
    flow_control_max_bytes: int = Field(default=100 * 1024 * 1024, ge=1024)
    max_lease_extension_s: int = Field(default=0, ge=0,
                                       description="longest single lease extension, which is also the stream's "
                                                   "ack deadline (10-600 s); 0 = the client default (60 s)")
    batch_max_messages: int = Field(default=500, ge=1, description="messages applied per SQLite commit")
    batch_max_wait_s: float = Field(default=0.2, gt=0,
                                    description="longest a received message waits for its batch to commit")
    shutdown_timeout_s: float = Field(default=30.0, gt=0, description="longest a clean stop may take")
    request_timeout_s: float = Field(default=30.0, gt=0, description="timeout of unary Pub/Sub calls")
    resubscribe_initial_s: float = Field(default=1.0, gt=0,
                                         description="first back-off after the stream fails transiently")
    resubscribe_max_s: float = Field(default=60.0, gt=0, description="longest back-off between resubscribes")


class CloudMetricsConfig(_Section):
    """Cloud Monitoring custom metrics (off by default: the local stack has no Cloud Monitoring)."""

    enabled: bool = False
    period_s: float = Field(default=60.0, ge=5.0,
                            description="one point per series per period: Cloud Monitoring refuses points "
                                        "written to one series more often than once every 5 s")
    max_series_per_request: int = Field(default=200, ge=1, le=200,
                                        description="Cloud Monitoring accepts at most 200 series per request")
    request_timeout_s: float = Field(default=30.0, gt=0)


class DriftWatchConfig(_Section):
    """The drift watch (`edgefleet.monitor.drift_watch`): every device against its own baseline, on a tick."""

    enabled: bool = Field(default=True, description="run the drift watch in the monitor's loop")
    interval_s: float = Field(default=300.0, gt=0, description="how often the monitor reads the count buckets "
                                                               "that ended since the last tick")
    settle_s: float = Field(default=30.0, ge=0, description="a telemetry window is read this long after it was "
                                                            "received at the earliest: windows reordered in transit "
                                                            "by less are still fed in the device's seq order")
    max_buckets_per_tick: int = Field(default=120, ge=1, description="count buckets read per tick at most (a "
                                                                     "monitor behind catches up over ticks)")
    forget_after_s: float = Field(
        default=14 * 86_400.0, gt=0, description="a device's drift watch on a version that has had no telemetry "
        "window this long is forgotten (its baseline and state deleted), unless it is the version the device runs "
        "now and the device was heard within that time: a retired device's, or a superseded version's (a rollback "
        "within it finds its old baseline)")
    registry: str | None = Field(default=None, min_length=1,
                                 description="the model registry whose manifests carry the calibration tables of "
                                             "the accuracy estimate (default: identity.registry; none: no "
                                             "estimate)")
    public_key: Path | None = Field(
        default=None, description="the release public key file or keyring directory (<key id>.pub files), as the "
        "devices' public_key: a calibration table is taken only from a manifest whose signature it verifies "
        "(none: no table, so no accuracy estimate; `fleet status` says why)")
    refuse_development_keys: bool = Field(
        default=False, description="refuse the tables of manifests signed with a development key (set it where the "
                                   "devices refuse them)")
    calibration_recheck_s: float = Field(
        default=3600.0, gt=0, description="a verified table's manifest is read again this often: a different signed "
                                          "manifest of the same version is reported (release versions are "
                                          "immutable), never taken")
    detector: DriftConfig = DriftConfig()

    @field_validator("public_key")
    @classmethod
    def _expand_key(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None


class StoreConfig(_Section):
    """Where the fleet state lives, when not in the SQLite file `store_path` (the embedded default)."""

    url: str | None = Field(default=None, min_length=1,
                            description="sqlite:///relative.sqlite, sqlite:////absolute.sqlite or "
                                        "postgresql://user@host:5432/dbname (several monitors may share one "
                                        "PostgreSQL database); unset: the SQLite file store_path")

    @field_validator("url")
    @classmethod
    def _known_engine(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_store_url(value)
            except EdgefleetError as error:
                raise ValueError(f"{error.message}; {error.fix}") from error
        return value


class MonitorConfig(_Section):
    """Everything `edgefleet monitor` and `edgefleet fleet ...` need."""

    project: str = Field(default="edgefleet-local", min_length=1, description="Google Cloud project id")
    subscription: str = Field(default=MONITOR_SUBSCRIPTION, min_length=1,
                              description="the fleet-monitor subscription on the telemetry topic")
    store_path: Path = Field(default=DEFAULT_STORE_PATH, description="the fleet state (SQLite), unless store.url")
    store: StoreConfig = StoreConfig()
    latency_window: int = Field(default=120, ge=1,
                                description="latency samples (messages) kept per device and model version")
    count_bucket_s: float = Field(default=60.0, gt=0,
                                  description="resolution of the per-version inference counts (health gate "
                                              "`since` is rounded down to it)")
    history_events: int = Field(default=50, ge=1, description="events `fleet device` shows by default")
    retention_s: float = Field(default=14 * 24 * 3600.0, ge=3600.0,
                               description="counts, distributions, latency samples and events older than this are "
                                           "pruned; must outlast a promotion's healthy_for_s")
    prune_interval_s: float = Field(default=600.0, gt=0, description="how often the monitor prunes")
    ingest: IngestConfig = IngestConfig()
    status: StatusRules = StatusRules()
    cloud_metrics: CloudMetricsConfig = CloudMetricsConfig()
    identity: IdentityConfig = IdentityConfig()
    drift: DriftWatchConfig = DriftWatchConfig()

    @field_validator("store_path")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @property
    def store_location(self) -> Path | str:
        """The store URL when set, else the SQLite file."""
        return self.store.url or self.store_path



def load_monitor_config(path: str | Path | None = None, **overrides: Any) -> MonitorConfig:
    """Reads the monitor configuration from YAML `path` (optional) and applies `overrides` on top.

    Overrides whose value is None are ignored, so CLI options can be passed straight through.

    Raises:
        ConfigError: naming the file and every wrong or unknown key.
    """
    return load(MonitorConfig, path, what="monitor config", section=CONFIG_SECTION, overrides=overrides,
                missing_fix="pass the path of an existing YAML file with --config",
                shape_fix="write `key: value` lines (see MonitorConfig)", fix="fix the keys named above")
