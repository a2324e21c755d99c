"""Cloud Monitoring custom metrics from the fleet state (the metrics `edgefleet.kernel.metrics` defines).

Cloud Monitoring refuses points written to one series more often than once every 5 s, so the monitor
aggregates: `PeriodAggregator` notes which devices were heard from (and how many new messages per model
version) during a reporting period, and when the period is over `build_time_series` makes exactly one
point per series from the fleet state. `write_time_series` sends them in requests of at most 200 series
(the API's limit). A device not heard from in a period gets no points (the infra's silence alert relies on
that). Writes happen on a background thread so a slow Cloud Monitoring never stalls ingest; a failed write
is logged and that period's points are dropped (a series cannot take points older than its last one).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, MutableSequence, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from google.api import metric_pb2
from google.api_core import exceptions as google_exceptions
from google.cloud import monitoring_v3
from google.protobuf import timestamp_pb2

from edgefleet.kernel.metrics import (
    ALL_METRICS,
    CPU_TEMPERATURE,
    DRIFT_METRICS,
    INFERENCE_ERROR_RATIO,
    INFERENCE_LATENCY_P50,
    INFERENCE_LATENCY_P95,
    INFERENCE_RATE,
    MEMORY_AVAILABLE,
    MONITORED_RESOURCE_TYPE,
    SPOOL_DEPTH,
    SPOOL_DROPPED,
    TELEMETRY_MESSAGES,
    UPTIME,
    MetricDefinition,
    MetricKind,
    ValueType,
)
from edgefleet.monitor.config import CloudMetricsConfig
from edgefleet.monitor.ingest import Outcome, Status
from edgefleet.monitor.query import DeviceStatus
from edgefleet.monitor.stats import WindowStats
from edgefleet.monitor.store import to_epoch

log = logging.getLogger(__name__)

SeriesKey = tuple[str, str, str]  # (device_id, model, model_version); "" where unknown


class MetricServiceClientLike(Protocol):
    """What the writer needs of `google.cloud.monitoring_v3.MetricServiceClient`."""

    def create_time_series(self, request: Any = None, *, name: str | None = None,
                           time_series: MutableSequence[monitoring_v3.TimeSeries] | None = None, retry: Any = ...,
                           timeout: Any = ..., metadata: Sequence[tuple[str, str]] = ()) -> None: ...


class PeriodAggregator:
    """Collects, for the current reporting period, the new messages per (device, model, version).

    Args:
        period_s: the reporting period (one point per series per period).
        start: epoch seconds when the first period starts.
    """

    def __init__(self, period_s: float, start: float) -> None:
        self.period_s = period_s
        self.period_start = start
        self.messages: Counter[SeriesKey] = Counter()

    def record(self, outcomes: Iterable[Outcome]) -> None:
        """Counts the applied and late (i.e. new) messages among `outcomes`."""
        for outcome in outcomes:
            if outcome.status in (Status.APPLIED, Status.LATE) and outcome.device_id:
                self.messages[(outcome.device_id, outcome.model_name or "", outcome.model_version or "")] += 1

    def due(self, now: float) -> bool:
        """True when the period is over."""
        return now - self.period_start >= self.period_s

    def close_period(self, now: float) -> Counter[SeriesKey]:
        """Returns the period's message counts and starts the next period at `now`."""
        messages, self.messages = self.messages, Counter()
        self.period_start = now
        return messages


def _labels(metric: MetricDefinition, device_id: str, model: str, version: str) -> dict[str, str]:
    known = {"device_id": device_id, "model": model, "model_version": version}
    missing = [key for key in metric.label_keys if key not in known]
    if missing:
        raise ValueError(f"metric {metric.type} has labels {missing} that the monitor does not know how to set")
    return {key: known[key] for key in metric.label_keys}


def _error_ratio(device: DeviceStatus) -> float | None:
    if not (device.window_inferences or device.window_errors):
        return None
    return WindowStats(None, None, device.window_inferences, device.window_errors).error_ratio


def _drift_sd(device: DeviceStatus, statistic: str) -> float | None:
    """The drift metric of `statistic`: its shift in baseline SDs in drift (0 when another statistic moved),
    0 while watched, None (no point) while the baseline is collected or the device is not watched."""
    drift = device.drift
    if drift is None or not device.model_version or drift.status not in ("watching", "drift"):
        return None
    if drift.status == "drift" and drift.statistic == statistic and drift.effect_sd is not None:
        return abs(drift.effect_sd)
    return 0.0


def _drift_value(statistic: str) -> Callable[[DeviceStatus], float | None]:
    return lambda device: _drift_sd(device, statistic)


# Metric -> the value of one device's point (None: no point this period). Every metric in ALL_METRICS has
# exactly one entry; tests/monitor check that they agree.
DEVICE_VALUES: Mapping[str, Callable[[DeviceStatus], float | int | None]] = {
    INFERENCE_LATENCY_P50.type: lambda device: device.latency_p50_ms if device.model_version else None,
    INFERENCE_LATENCY_P95.type: lambda device: device.latency_p95_ms if device.model_version else None,
    INFERENCE_RATE.type: lambda device: device.fps if device.model_version else None,
    INFERENCE_ERROR_RATIO.type: lambda device: _error_ratio(device) if device.model_version else None,
    CPU_TEMPERATURE.type: lambda device: device.cpu_temp_c,
    MEMORY_AVAILABLE.type: lambda device: device.mem_available_mb,
    UPTIME.type: lambda device: device.uptime_s,
    SPOOL_DEPTH.type: lambda device: device.spool_depth,
    SPOOL_DROPPED.type: lambda device: device.spool_dropped,
    **{metric.type: _drift_value(statistic) for statistic, metric in DRIFT_METRICS.items()},
}
PERIOD_COUNT_METRICS = frozenset({TELEMETRY_MESSAGES.type})


def _typed_value(metric: MetricDefinition, value: float | int | bool) -> monitoring_v3.TypedValue:
    if metric.value_type is ValueType.INT64:
        return monitoring_v3.TypedValue(int64_value=int(value))
    if metric.value_type is ValueType.BOOL:
        return monitoring_v3.TypedValue(bool_value=bool(value))
    return monitoring_v3.TypedValue(double_value=float(value))


_KINDS = {MetricKind.GAUGE: metric_pb2.MetricDescriptor.MetricKind.GAUGE,
          MetricKind.CUMULATIVE: metric_pb2.MetricDescriptor.MetricKind.CUMULATIVE}
_VALUE_TYPES = {ValueType.INT64: metric_pb2.MetricDescriptor.ValueType.INT64,
                ValueType.DOUBLE: metric_pb2.MetricDescriptor.ValueType.DOUBLE,
                ValueType.BOOL: metric_pb2.MetricDescriptor.ValueType.BOOL}


def _series(metric: MetricDefinition, labels: Mapping[str, str], project: str, end: timestamp_pb2.Timestamp,
            value: float | int | bool) -> monitoring_v3.TimeSeries:
    if metric.kind is not MetricKind.GAUGE:
        raise ValueError(f"metric {metric.type} is {metric.kind}; the monitor writes GAUGE metrics only")
    return monitoring_v3.TimeSeries(
        metric={"type": metric.type, "labels": dict(labels)},
        resource={"type": MONITORED_RESOURCE_TYPE, "labels": {"project_id": project}},
        metric_kind=_KINDS[metric.kind],
        value_type=_VALUE_TYPES[metric.value_type],
        unit=metric.unit,
        points=[monitoring_v3.Point(interval=monitoring_v3.TimeInterval(end_time=end),
                                    value=_typed_value(metric, value))],
    )


def build_time_series(project: str, end_time: datetime, period_messages: Mapping[SeriesKey, int],
                      devices: Iterable[DeviceStatus],
                      metrics: Sequence[MetricDefinition] = ALL_METRICS) -> list[monitoring_v3.TimeSeries]:
    """One point per series for the devices heard from during a period, in a stable order.

    Args:
        project: the Google Cloud project (label of the `global` resource).
        end_time: the end of the period (every point's time).
        period_messages: new messages per (device, model, version) in the period; its devices are the ones
            heard from.
        devices: the current state of (at least) those devices.
        metrics: which metrics to write.

    Raises:
        ValueError: a metric has no known value or labels here (the definitions and this module disagree).
    """
    end = timestamp_pb2.Timestamp()
    end.FromNanoseconds(round(to_epoch(end_time) * 1e9))
    heard = {device_id for device_id, _, _ in period_messages}
    states = {device.device_id: device for device in devices if device.device_id in heard}
    series: dict[tuple[str, tuple[tuple[str, str], ...]], monitoring_v3.TimeSeries] = {}
    for metric in metrics:
        if metric.type in PERIOD_COUNT_METRICS:
            points = [((device_id, model, version), count)
                      for (device_id, model, version), count in sorted(period_messages.items())]
        elif metric.type in DEVICE_VALUES:
            extract = DEVICE_VALUES[metric.type]
            points = [((device.device_id, device.model_name or "", device.model_version or ""), extract(device))
                      for _, device in sorted(states.items())]
        else:
            raise ValueError(f"metric {metric.type} has no value in the fleet monitor: add it to DEVICE_VALUES "
                             "or PERIOD_COUNT_METRICS in flows/src/edgefleet/monitor/cloud_metrics.py")
        for (device_id, model, version), value in points:
            if value is None:
                continue
            labels = _labels(metric, device_id, model, version)
            key = (metric.type, tuple(sorted(labels.items())))
            # One point per series: should two entries map to one series, the later (current) one wins.
            series[key] = _series(metric, labels, project, end, value)
    return list(series.values())


def chunk(series: Sequence[monitoring_v3.TimeSeries], size: int) -> list[list[monitoring_v3.TimeSeries]]:
    """Splits `series` into requests of at most `size` series."""
    return [list(series[start:start + size]) for start in range(0, len(series), size)]


def write_time_series(client: MetricServiceClientLike, project: str, series: Sequence[monitoring_v3.TimeSeries],
                      config: CloudMetricsConfig) -> int:
    """Sends `series` in requests of at most `config.max_series_per_request`; returns the requests sent.

    A failed request is logged and skipped (its points are dropped); the others are still sent.
    """
    sent = 0
    for part in chunk(series, config.max_series_per_request):
        try:
            client.create_time_series(name=f"projects/{project}", time_series=part,
                                      timeout=config.request_timeout_s)
            sent += 1
        except google_exceptions.GoogleAPIError as error:
            log.warning("Cloud Monitoring refused %d time series for project %s: %s", len(part), project, error)
    return sent


@dataclass
class CloudMetricsWriter:
    """Sends built series from one background thread; a period still sending makes the next one wait."""

    client: MetricServiceClientLike
    project: str
    config: CloudMetricsConfig

    def __post_init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgefleet-cloud-metrics")
        self._pending: Future[int] | None = None

    def submit(self, series: Sequence[monitoring_v3.TimeSeries]) -> Future[int]:
        """Queues one period's series for sending."""
        self._pending = self._executor.submit(write_time_series, self.client, self.project, series, self.config)
        return self._pending

    def close(self) -> None:
        """Waits for the last period to be sent, then stops the thread."""
        self._executor.shutdown(wait=True)


def default_client() -> MetricServiceClientLike:
    """The real Cloud Monitoring client (application default credentials)."""
    return monitoring_v3.MetricServiceClient()
