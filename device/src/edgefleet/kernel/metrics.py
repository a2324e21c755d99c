"""Cloud Monitoring custom metrics the fleet monitor writes: defined once, here.

The Pulumi program (`edgefleet.infra.monitoring`) creates a metric descriptor for every entry of
`ALL_METRICS` and builds its dashboard and alert policies only from these definitions (and a few built-in
Pub/Sub metrics), so the dashboard cannot chart a metric nobody writes. The fleet monitor imports the same
definitions to write the points. This module imports nothing from Pulumi or Google Cloud.

How the monitor writes them (the dashboard and the alerts rely on it):
- every point goes to the monitored resource `MONITORED_RESOURCE_TYPE` ("global", label `project_id`);
- one point per series per reporting period, only for devices heard from during that period: a device that
  stops reporting stops having points, which is what the "device silent" alert (metric absence) detects;
- the labels of a series are exactly `MetricDefinition.label_keys`, every one set (empty string if unknown).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType

METRIC_PREFIX = "custom.googleapis.com/edgefleet"
MONITORED_RESOURCE_TYPE = "global"


class _TextEnum(str, Enum):
    """`enum.StrEnum` on Python 3.9 (the kernel runs on devices): `str()` and f-strings give the value."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class MetricKind(_TextEnum):
    """Cloud Monitoring metric kinds (the `metricKind` of a descriptor)."""

    GAUGE = "GAUGE"
    CUMULATIVE = "CUMULATIVE"


class ValueType(_TextEnum):
    """Cloud Monitoring value types (the `valueType` of a descriptor)."""

    BOOL = "BOOL"
    INT64 = "INT64"
    DOUBLE = "DOUBLE"


@dataclass(frozen=True)
class MetricLabel:
    """One label of a metric (always a STRING label)."""

    key: str
    description: str


DEVICE_ID = MetricLabel("device_id", "Id of the device that sent the telemetry")
MODEL = MetricLabel("model", "Name of the model the device runs")
MODEL_VERSION = MetricLabel("model_version", "Version of the model the device runs")

DEVICE_LABELS = (DEVICE_ID,)
DEVICE_MODEL_LABELS = (DEVICE_ID, MODEL, MODEL_VERSION)


@dataclass(frozen=True)
class MetricDefinition:
    """A custom metric: its type, kind, value type, unit, labels and what it means.

    Attributes:
        type: Full metric type, `custom.googleapis.com/edgefleet/...`.
        kind: GAUGE or CUMULATIVE.
        value_type: INT64, DOUBLE or BOOL.
        unit: a unit from Cloud Monitoring's documented subset of UCUM ("ms", "s", "MiBy", "1"; an
            annotation alone such as "{Cel}" means "1" with a name: Celsius is not in that subset).
        display_name: Short human name (dashboards, alert titles).
        description: What one point means.
        labels: The labels every series carries.
    """

    type: str
    kind: MetricKind
    value_type: ValueType
    unit: str
    display_name: str
    description: str
    labels: tuple[MetricLabel, ...]

    @property
    def label_keys(self) -> tuple[str, ...]:
        """The label keys of every series of this metric."""
        return tuple(label.key for label in self.labels)

    @property
    def short_name(self) -> str:
        """The part after the prefix: `inference/latency_p95`."""
        return self.type.removeprefix(METRIC_PREFIX + "/")


def _metric(
    name: str,
    value_type: ValueType,
    unit: str,
    display_name: str,
    description: str,
    labels: tuple[MetricLabel, ...],
    kind: MetricKind = MetricKind.GAUGE,
) -> MetricDefinition:
    return MetricDefinition(
        type=f"{METRIC_PREFIX}/{name}",
        kind=kind,
        value_type=value_type,
        unit=unit,
        display_name=display_name,
        description=description,
        labels=labels,
    )


INFERENCE_LATENCY_P50 = _metric(
    "inference/latency_p50",
    ValueType.DOUBLE,
    "ms",
    "Inference latency p50",
    "Median inference latency of the device over the monitor's latency window, per model version.",
    DEVICE_MODEL_LABELS,
)
INFERENCE_LATENCY_P95 = _metric(
    "inference/latency_p95",
    ValueType.DOUBLE,
    "ms",
    "Inference latency p95",
    "95th percentile inference latency of the device over the monitor's latency window, per model version.",
    DEVICE_MODEL_LABELS,
)
INFERENCE_RATE = _metric(
    "inference/rate",
    ValueType.DOUBLE,
    "1/s",
    "Inference rate",
    "Inferences per second the device last reported.",
    DEVICE_MODEL_LABELS,
)
INFERENCE_ERROR_RATIO = _metric(
    "inference/error_ratio",
    ValueType.DOUBLE,
    "1",
    "Inference error ratio",
    "Failed inferences per inference over the monitor's latency window (0 to 1).",
    DEVICE_MODEL_LABELS,
)
TELEMETRY_MESSAGES = _metric(
    "device/telemetry_messages",
    ValueType.INT64,
    "1",
    "Telemetry messages",
    "Telemetry messages received from the device during the last reporting period. Written only for devices "
    "heard from in that period: its absence means the device is silent. Counting its series per "
    "model_version gives the model version distribution across the fleet.",
    DEVICE_MODEL_LABELS,
)
CPU_TEMPERATURE = _metric(
    "device/cpu_temperature",
    ValueType.DOUBLE,
    "{Cel}",  # degrees Celsius; "Cel" itself is not in MetricDescriptor.unit's documented list
    "CPU temperature",
    "CPU temperature the device last reported (not written when the device cannot read it).",
    DEVICE_LABELS,
)
MEMORY_AVAILABLE = _metric(
    "device/memory_available",
    ValueType.DOUBLE,
    "MiBy",
    "Memory available",
    "Available memory the device last reported.",
    DEVICE_LABELS,
)
UPTIME = _metric(
    "device/uptime",
    ValueType.DOUBLE,
    "s",
    "Uptime",
    "Seconds since the device booted, as last reported.",
    DEVICE_LABELS,
)
SPOOL_DEPTH = _metric(
    "device/spool_depth",
    ValueType.INT64,
    "1",
    "Telemetry spool depth",
    "Telemetry messages waiting in the device's on-disk spool, as last reported.",
    DEVICE_LABELS,
)
SPOOL_DROPPED = _metric(
    "device/spool_dropped",
    ValueType.INT64,
    "1",
    "Telemetry spool drops",
    "Messages the device's full spool dropped (oldest first), total as last reported by the device. A gauge, "
    "not CUMULATIVE: the device's count restarts with its spool.",
    DEVICE_LABELS,
)



def _drift_metric(statistic: str, what: str) -> MetricDefinition:
    return _metric(
        f"drift/{statistic}_sd",
        ValueType.DOUBLE,
        "1",
        f"Drift: {statistic}",
        f"How far the device's {what} moved from its own baseline on this model version, in the baseline's "
        "standard deviations of the 100-frame block statistic (absolute): 0 while the drift watch sees no "
        "change, the shift since its onset while the device is in drift (`edgefleet fleet status`, drift "
        "column). No point while the device collects its baseline.",
        DEVICE_MODEL_LABELS,
    )


DRIFT_CLASS_MIX = _drift_metric("class_mix", "class mix (Jensen-Shannon divergence)")
DRIFT_SCORE_MEDIAN = _drift_metric("score_median", "top-1 score median")
DRIFT_DETECTIONS = _drift_metric("detections", "detections per frame")
DRIFT_METRICS: Mapping[str, MetricDefinition] = MappingProxyType(
    {"class_mix": DRIFT_CLASS_MIX, "score_median": DRIFT_SCORE_MEDIAN, "detections": DRIFT_DETECTIONS})
"""Drift block statistic (`edgefleet.monitor.drift`) -> its metric."""

ALL_METRICS: tuple[MetricDefinition, ...] = (
    INFERENCE_LATENCY_P50,
    INFERENCE_LATENCY_P95,
    INFERENCE_RATE,
    INFERENCE_ERROR_RATIO,
    TELEMETRY_MESSAGES,
    CPU_TEMPERATURE,
    MEMORY_AVAILABLE,
    UPTIME,
    SPOOL_DEPTH,
    SPOOL_DROPPED,
    DRIFT_CLASS_MIX,
    DRIFT_SCORE_MEDIAN,
    DRIFT_DETECTIONS,
)

METRICS_BY_TYPE: Mapping[str, MetricDefinition] = MappingProxyType(
    {metric.type: metric for metric in ALL_METRICS}
)
