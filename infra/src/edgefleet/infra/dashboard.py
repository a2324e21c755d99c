"""Monitoring filters and the fleet dashboard, built only from the shared metric definitions.

Pure Python (no Pulumi import): `infra/monitoring.py` turns this into resources, the tests and the policy
checks read the same filters back. Every metric a filter names is either one the fleet monitor writes
(`edgefleet.kernel.metrics.ALL_METRICS`) or one of the built-in Pub/Sub metrics below.
"""

from __future__ import annotations

import re
from typing import Any

from edgefleet.kernel import metrics as fleet_metrics
from edgefleet.kernel.metrics import MONITORED_RESOURCE_TYPE, MetricDefinition

# Built-in Pub/Sub metrics (https://cloud.google.com/monitoring/api/metrics_gcp_p_z#gcp-pubsub).
PUBSUB_UNDELIVERED_MESSAGES = "pubsub.googleapis.com/subscription/num_undelivered_messages"
PUBSUB_OLDEST_UNACKED_AGE = "pubsub.googleapis.com/subscription/oldest_unacked_message_age"
PUBSUB_DEAD_LETTER_COUNT = "pubsub.googleapis.com/subscription/dead_letter_message_count"
PUBSUB_SUBSCRIPTION_RESOURCE = "pubsub_subscription"
BUILTIN_METRICS: frozenset[str] = frozenset(
    {PUBSUB_UNDELIVERED_MESSAGES, PUBSUB_OLDEST_UNACKED_AGE, PUBSUB_DEAD_LETTER_COUNT}
)

ALIGNMENT_PERIOD = "60s"
DASHBOARD_COLUMNS = 48
TILE_WIDTH = 24
TILE_HEIGHT = 16

_METRIC_TYPE = re.compile(r'metric\.type\s*=\s*"([^"]+)"')


def metric_filter(metric_type: str, resource_type: str, **resource_labels: str) -> str:
    """A Cloud Monitoring filter selecting `metric_type` on `resource_type` (optionally one resource)."""
    parts = [f'metric.type="{metric_type}"', f'resource.type="{resource_type}"']
    parts += [f'resource.label.{key}="{value}"' for key, value in sorted(resource_labels.items())]
    return " AND ".join(parts)


def fleet_metric_filter(metric: MetricDefinition) -> str:
    """The filter of one metric the fleet monitor writes."""
    return metric_filter(metric.type, MONITORED_RESOURCE_TYPE)


def subscription_filter(metric_type: str, subscription: str) -> str:
    """The filter of a built-in Pub/Sub metric of one subscription (by short name)."""
    return metric_filter(metric_type, PUBSUB_SUBSCRIPTION_RESOURCE, subscription_id=subscription)


def metric_types_in(text: str) -> set[str]:
    """Every `metric.type="..."` a filter (or a whole dashboard JSON text) names."""
    return set(_METRIC_TYPE.findall(text))


def _aggregation(aligner: str, reducer: str | None = None, group_by: tuple[str, ...] = ()) -> dict[str, Any]:
    aggregation: dict[str, Any] = {"alignmentPeriod": ALIGNMENT_PERIOD, "perSeriesAligner": aligner}
    if reducer:
        aggregation["crossSeriesReducer"] = reducer
        aggregation["groupByFields"] = list(group_by)
    return aggregation


def _dataset(filter_: str, aggregation: dict[str, Any], legend: str, plot: str = "LINE") -> dict[str, Any]:
    return {
        "timeSeriesQuery": {"timeSeriesFilter": {"filter": filter_, "aggregation": aggregation}},
        "plotType": plot,
        "legendTemplate": legend,
        "targetAxis": "Y1",
    }


def _chart(title: str, unit_label: str, *datasets: dict[str, Any]) -> dict[str, Any]:
    return {
        "title": title,
        "xyChart": {
            "dataSets": list(datasets),
            "chartOptions": {"mode": "COLOR"},
            "yAxis": {"label": unit_label, "scale": "LINEAR"},
        },
    }


def _per_device(metric: MetricDefinition, title: str | None = None) -> dict[str, Any]:
    """One line per device (max over its model versions in the period)."""
    aggregation = _aggregation("ALIGN_MEAN", "REDUCE_MAX", ("metric.label.device_id",))
    return _chart(
        title or metric.display_name,
        metric.unit,
        _dataset(fleet_metric_filter(metric), aggregation, "${metric.labels.device_id}"),
    )


def _per_subscription(metric_type: str, subscription: str, aligner: str, legend: str,
                      plot: str = "LINE") -> dict[str, Any]:
    """One built-in Pub/Sub metric of one subscription."""
    return _dataset(subscription_filter(metric_type, subscription), _aggregation(aligner), legend, plot=plot)


def dashboard(fleet_name: str, monitor_subscription: str, dead_letter_subscription: str) -> dict[str, Any]:
    """The fleet dashboard (Cloud Monitoring dashboard JSON, mosaic layout).

    Args:
        fleet_name: Shown in the title.
        monitor_subscription: Short name of the fleet-monitor subscription (telemetry backlog).
        dead_letter_subscription: Short name of the dead-letter subscription.
    """
    widgets = [
        *_device_charts(),
        _drift_chart(),
        *_subscription_charts(monitor_subscription, dead_letter_subscription),
    ]
    return {
        "displayName": f"{fleet_name}: fleet",
        "mosaicLayout": {"columns": DASHBOARD_COLUMNS, "tiles": _tiles(widgets)},
    }


def _device_charts() -> list[dict[str, Any]]:
    """The charts of what the devices report: latency, model versions, rate, errors, health, spool."""
    per_version = ("metric.label.model", "metric.label.model_version")
    return [
        _per_device(fleet_metrics.INFERENCE_LATENCY_P50, "Inference latency p50 per device"),
        _per_device(fleet_metrics.INFERENCE_LATENCY_P95, "Inference latency p95 per device"),
        _chart(
            "Model versions across the fleet (devices)",
            "devices",
            _dataset(
                fleet_metric_filter(fleet_metrics.TELEMETRY_MESSAGES),
                _aggregation("ALIGN_MAX", "REDUCE_COUNT", per_version),
                "${metric.labels.model} ${metric.labels.model_version}",
                plot="STACKED_AREA",
            ),
        ),
        _per_device(fleet_metrics.INFERENCE_RATE, "Inferences per second per device"),
        _per_device(fleet_metrics.INFERENCE_ERROR_RATIO, "Inference error ratio per device"),
        _per_device(fleet_metrics.CPU_TEMPERATURE, "CPU temperature"),
        _per_device(fleet_metrics.MEMORY_AVAILABLE, "Memory available"),
        _per_device(fleet_metrics.UPTIME, "Uptime"),
        _per_device(fleet_metrics.SPOOL_DEPTH, "Telemetry spool depth (messages waiting on the device)"),
        _per_device(fleet_metrics.SPOOL_DROPPED, "Telemetry spool drops (total per device)"),
    ]


def _drift_chart() -> dict[str, Any]:
    """One line per device and drift statistic: its shift from the device's own baseline."""
    return _chart(
        "Drift per device (shift from its own baseline, in baseline SDs; 0: no drift)",
        "SD",
        *(_dataset(fleet_metric_filter(metric),
                   _aggregation("ALIGN_MAX", "REDUCE_MAX", ("metric.label.device_id",)),
                   f"${{metric.labels.device_id}} {statistic}")
          for statistic, metric in fleet_metrics.DRIFT_METRICS.items()),
    )


def _subscription_charts(monitor_subscription: str, dead_letter_subscription: str) -> list[dict[str, Any]]:
    """The telemetry backlog of the monitor's subscription and the dead-lettered telemetry (built-in metrics)."""
    return [
        _chart(
            "Telemetry backlog (fleet-monitor subscription)",
            "messages",
            _per_subscription(PUBSUB_UNDELIVERED_MESSAGES, monitor_subscription, "ALIGN_MAX", "undelivered"),
            _per_subscription(PUBSUB_OLDEST_UNACKED_AGE, monitor_subscription, "ALIGN_MAX", "oldest unacked (s)"),
        ),
        _chart(
            "Dead-lettered telemetry",
            "messages",
            _per_subscription(PUBSUB_DEAD_LETTER_COUNT, monitor_subscription, "ALIGN_SUM",
                              "forwarded to the dead-letter topic", plot="STACKED_BAR"),
            _per_subscription(PUBSUB_UNDELIVERED_MESSAGES, dead_letter_subscription, "ALIGN_MAX",
                              "waiting in the dead-letter subscription"),
        ),
    ]


def _tiles(widgets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The widgets laid out left to right, top to bottom, in tiles of one size."""
    per_row = DASHBOARD_COLUMNS // TILE_WIDTH
    return [
        {
            "xPos": (index % per_row) * TILE_WIDTH,
            "yPos": (index // per_row) * TILE_HEIGHT,
            "width": TILE_WIDTH,
            "height": TILE_HEIGHT,
            "widget": widget,
        }
        for index, widget in enumerate(widgets)
    ]
