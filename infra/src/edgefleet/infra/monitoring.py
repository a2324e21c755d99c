"""Monitoring: descriptors for the metrics the fleet monitor writes, the fleet dashboard, alert policies.

Everything here comes from `edgefleet.kernel.metrics` (what the monitor writes) and the built-in Pub/Sub
metrics in `edgefleet.infra.dashboard`, so no chart or alert can refer to a metric nobody writes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp
import pulumiverse_time

from edgefleet.infra.component import Component, ComponentArgs
from edgefleet.infra.config import AlertSettings
from edgefleet.infra.dashboard import (
    ALIGNMENT_PERIOD,
    PUBSUB_OLDEST_UNACKED_AGE,
    PUBSUB_UNDELIVERED_MESSAGES,
    dashboard,
    fleet_metric_filter,
    subscription_filter,
)
from edgefleet.kernel.metrics import (
    ALL_METRICS,
    DRIFT_METRICS,
    INFERENCE_LATENCY_P95,
    TELEMETRY_MESSAGES,
    MetricDefinition,
)

SECONDS_PER_MINUTE = 60


@dataclass(frozen=True, kw_only=True)
class MonitoringArgs(ComponentArgs):
    """What the monitoring component needs.

    Attributes:
        project: Google Cloud project id.
        fleet_name: Shown in titles.
        alerts: Thresholds and notification channels.
        monitor_subscription: Short name of the fleet-monitor subscription.
        dead_letter_subscription: Short name of the dead-letter subscription.
        labels: User labels on the alert policies.
        depends_on: What every resource waits for (the Cloud Monitoring API).
    """

    fleet_name: str
    alerts: AlertSettings
    monitor_subscription: str
    dead_letter_subscription: str
    labels: dict[str, str]


def threshold_condition(
    display_name: str, metric_filter: str, *, threshold: float, minutes: int, aligner: str
) -> gcp.monitoring.AlertPolicyConditionArgs:
    """A condition that fires when every point of a series stays above `threshold` for `minutes`."""
    return gcp.monitoring.AlertPolicyConditionArgs(
        display_name=display_name,
        condition_threshold=gcp.monitoring.AlertPolicyConditionConditionThresholdArgs(
            filter=metric_filter,
            comparison="COMPARISON_GT",
            threshold_value=threshold,
            duration=f"{minutes * SECONDS_PER_MINUTE}s",
            aggregations=[
                gcp.monitoring.AlertPolicyConditionConditionThresholdAggregationArgs(
                    alignment_period=ALIGNMENT_PERIOD, per_series_aligner=aligner
                )
            ],
            trigger=gcp.monitoring.AlertPolicyConditionConditionThresholdTriggerArgs(count=1),
        ),
    )


def telemetry_absent_condition(
    display_name: str, minutes: int, group_by_fields: list[str] | None = None
) -> gcp.monitoring.AlertPolicyConditionArgs:
    """Absence for `minutes` of the monitor's per-period telemetry count, summed per `group_by_fields` (none:
    over the whole fleet, one series)."""
    return gcp.monitoring.AlertPolicyConditionArgs(
        display_name=display_name,
        condition_absent=gcp.monitoring.AlertPolicyConditionConditionAbsentArgs(
            filter=fleet_metric_filter(TELEMETRY_MESSAGES),
            duration=f"{minutes * SECONDS_PER_MINUTE}s",
            aggregations=[
                gcp.monitoring.AlertPolicyConditionConditionAbsentAggregationArgs(
                    alignment_period=ALIGNMENT_PERIOD,
                    per_series_aligner="ALIGN_SUM",
                    cross_series_reducer="REDUCE_SUM",
                    group_by_fields=group_by_fields,
                )
            ],
            trigger=gcp.monitoring.AlertPolicyConditionConditionAbsentTriggerArgs(count=1),
        ),
    )


def device_silent(minutes: int) -> gcp.monitoring.AlertPolicyConditionArgs:
    """Absence of a device's telemetry count: one series per device whatever model version it runs, so a model
    swap (a new model_version series) does not look like silence."""
    return telemetry_absent_condition(
        f"no telemetry from a device for {minutes} min", minutes, group_by_fields=["metric.label.device_id"]
    )


def monitor_written_nothing(minutes: int) -> gcp.monitoring.AlertPolicyConditionArgs:
    """Absence of the monitor's per-period telemetry count summed over the whole fleet: one series, so one
    incident when the monitor stops writing (not one per device, as the device-silent policy does)."""
    return telemetry_absent_condition(f"no telemetry count written for any device for {minutes} min", minutes)


def drift_conditions(threshold_sd: float) -> list[gcp.monitoring.AlertPolicyConditionArgs]:
    """One condition per drift statistic (its metric is the statistic's: the condition's name says which moved);
    the monitor writes the shift only while the device is in drift, 0 otherwise, so each point over the
    threshold is a drift (no duration: the drift watch already waited for its evidence)."""
    return [
        threshold_condition(
            f"{statistic} moved more than {threshold_sd:g} baseline SDs",
            fleet_metric_filter(metric),
            threshold=threshold_sd,
            minutes=0,
            aligner="ALIGN_MAX",
        )
        for statistic, metric in DRIFT_METRICS.items()
    ]


def metric_types_trigger(metrics: Sequence[MetricDefinition]) -> dict[str, str]:
    """The Sleep's triggers: a new or changed metric type replaces the Sleep, so its wait runs again."""
    return {"metricTypes": ",".join(sorted(metric.type for metric in metrics))}


class Monitoring(Component):
    """Metric descriptors, the fleet dashboard and five alert policies.

    Every policy goes to `alerts.notificationChannels`; the stack config refuses none unless
    `alerts.allowWithoutChannel` (infra/config.py), so no alert is created that tells nobody.

    Cloud Monitoring refuses an alert policy on a custom metric type until the type is visible, which can
    take minutes after its descriptor is created. The policies wait for the descriptors and then for a
    `pulumiverse_time.Sleep` of `alerts.newMetricWaitSeconds` (run again only when the metric types change).

    Attributes:
        descriptors: metric type -> descriptor resource.
        metric_propagation: The Sleep between the descriptors and the alert policies.
        dashboard: The dashboard resource.
        silent_device_alert, latency_alert, dead_letter_alert, monitor_stopped_alert, drift_alert: the alert
            policies.
    """

    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("edgefleet:infra:Monitoring", name, args, opts)
        self._args = args
        self._name = name
        self.descriptors = {metric.type: self._descriptor(metric) for metric in ALL_METRICS}
        self.metric_propagation = self._metric_propagation()
        self.dashboard = self._dashboard()
        # Alert policies on a custom metric fail to create before its descriptor exists and its type is
        # visible: they wait for both.
        after_metric_types = self._child(self.metric_propagation)
        self.silent_device_alert = self._silent_device_alert(after_metric_types)
        self.latency_alert = self._latency_alert(after_metric_types)
        self.dead_letter_alert = self._dead_letter_alert()
        self.monitor_stopped_alert = self._monitor_stopped_alert(after_metric_types)
        self.drift_alert = self._drift_alert(after_metric_types)
        self.register_outputs({"dashboard": self.dashboard.id})

    def _metric_propagation(self) -> pulumiverse_time.Sleep:
        """The wait, after the descriptors, for their metric types to become visible to alert policies."""
        return pulumiverse_time.Sleep(
            f"{self._name}-new-metric-types",
            create_duration=f"{self._args.alerts.new_metric_wait_seconds}s",
            triggers=metric_types_trigger(ALL_METRICS),
            opts=self._child(*self.descriptors.values()),
        )

    def _dashboard(self) -> gcp.monitoring.Dashboard:
        args = self._args
        return gcp.monitoring.Dashboard(
            f"{self._name}-dashboard",
            project=args.project,
            dashboard_json=json.dumps(
                dashboard(args.fleet_name, args.monitor_subscription, args.dead_letter_subscription)
            ),
            opts=self._child(*self.descriptors.values()),
        )

    def _silent_device_alert(self, opts: pulumi.ResourceOptions) -> gcp.monitoring.AlertPolicy:
        minutes = self._args.alerts.silent_minutes
        return self._policy(
            "device-silent",
            "device silent",
            device_silent(minutes),
            f"Device ${{metric.label.device_id}} has sent no telemetry for {minutes} minutes.\n\n"
            "Check `edgefleet fleet status`, the device's network and its agent (`systemctl status "
            "edgefleet-agent`); its spool keeps telemetry until it can publish again.",
            opts,
        )

    def _latency_alert(self, opts: pulumi.ResourceOptions) -> gcp.monitoring.AlertPolicy:
        alerts = self._args.alerts
        return self._policy(
            "latency-p95",
            f"inference latency p95 over {alerts.latency_p95_ms:g} ms",
            threshold_condition(
                f"p95 latency > {alerts.latency_p95_ms:g} ms for {alerts.latency_for_minutes} min",
                fleet_metric_filter(INFERENCE_LATENCY_P95),
                threshold=alerts.latency_p95_ms,
                minutes=alerts.latency_for_minutes,
                aligner="ALIGN_MEAN",
            ),
            "Device ${metric.label.device_id} runs ${metric.label.model} ${metric.label.model_version} with a "
            f"p95 inference latency over {alerts.latency_p95_ms:g} ms.\n\nA model that fell back to the CPU "
            "(no Edge TPU, or ops not mapped to the TPU) is the usual cause: see `edgefleet fleet status` and "
            "the release's compiler report; roll back with `edgefleet rollout` if a new version caused it.",
            opts,
        )

    def _dead_letter_alert(self) -> gcp.monitoring.AlertPolicy:
        subscription = self._args.dead_letter_subscription
        return self._policy(
            "dead-letters",
            "telemetry dead-lettered",
            threshold_condition(
                f"more than {self._args.alerts.dead_letter_messages} message(s) in {subscription}",
                subscription_filter(PUBSUB_UNDELIVERED_MESSAGES, subscription),
                threshold=self._args.alerts.dead_letter_messages,
                minutes=1,
                aligner="ALIGN_MAX",
            ),
            f"Telemetry the fleet monitor could not process was moved to `{subscription}`.\n\n"
            f"Pull a few to see why (`gcloud pubsub subscriptions pull {subscription} --limit 5`): malformed "
            "messages from an old agent, or a monitor that crashes on them.",
            self._child(),  # a built-in Pub/Sub metric: nothing to wait for
        )

    def _monitor_stopped_alert(self, opts: pulumi.ResourceOptions) -> gcp.monitoring.AlertPolicy:
        minutes, subscription = self._args.alerts.silent_minutes, self._args.monitor_subscription
        return self._policy(
            "monitor-stopped",
            "fleet monitor stopped",
            monitor_written_nothing(minutes),
            f"The fleet monitor has written no telemetry count for any device for {minutes} "
            f"minutes.\n\nEither the monitor stopped (check the `fleet-monitor` flow run in Prefect and its "
            f"worker; `gcloud pubsub subscriptions describe {subscription}` shows telemetry piling "
            "up), or every device went silent at once (network, registry, credentials). One incident for the "
            "whole fleet: the per-device silence alerts say which devices.",
            opts,
            extra_conditions=[threshold_condition(
                f"telemetry unconsumed in {subscription} for over {minutes} min",
                subscription_filter(PUBSUB_OLDEST_UNACKED_AGE, subscription),
                threshold=minutes * SECONDS_PER_MINUTE,
                minutes=1,
                aligner="ALIGN_MAX",
            )],
        )

    def _drift_alert(self, opts: pulumi.ResourceOptions) -> gcp.monitoring.AlertPolicy:
        first, *others = drift_conditions(self._args.alerts.drift_sd)
        return self._policy(
            "drift",
            "device drift",
            first,
            "Device ${metric.label.device_id} (${metric.label.model} ${metric.label.model_version}): "
            "${condition.display_name}. The incident's value is the shift since its onset in the device's own "
            "baseline SDs (each device is compared with its first blocks on this version, not with the lab's "
            "reference).\n\n`edgefleet fleet status` shows the drift column (which way and by how much in the "
            "statistic's units) and `edgefleet fleet device` the device; look at its camera (moved, fogged, "
            "night) or its model. A drift says the scene or the model's output changed, not whether the "
            "answers are right. Once the new scene is accepted: `edgefleet fleet drift-accept <device>` (a new "
            "baseline).",
            opts,
            extra_conditions=others,
        )

    def _descriptor(self, metric: MetricDefinition) -> gcp.monitoring.MetricDescriptor:
        return gcp.monitoring.MetricDescriptor(
            f"{self._name}-{metric.short_name.replace('/', '-').replace('_', '-')}",
            project=self._args.project,
            type=metric.type,
            metric_kind=metric.kind.value,
            value_type=metric.value_type.value,
            unit=metric.unit,
            display_name=metric.display_name,
            description=metric.description,
            labels=[
                gcp.monitoring.MetricDescriptorLabelArgs(
                    key=label.key, value_type="STRING", description=label.description
                )
                for label in metric.labels
            ],
            opts=self._child(),
        )

    def _policy(
        self,
        short_name: str,
        title: str,
        condition: gcp.monitoring.AlertPolicyConditionArgs,
        documentation: str,
        opts: pulumi.ResourceOptions,
        extra_conditions: Sequence[gcp.monitoring.AlertPolicyConditionArgs] = (),
    ) -> gcp.monitoring.AlertPolicy:
        """The alert policy `<component>-<short_name>` titled `<fleet>: <title>`, to the notification channels."""
        return gcp.monitoring.AlertPolicy(
            f"{self._name}-{short_name}",
            project=self._args.project,
            display_name=f"{self._args.fleet_name}: {title}",
            combiner="OR",
            conditions=[condition, *extra_conditions],
            notification_channels=list(self._args.alerts.notification_channels),
            user_labels=self._args.labels,
            severity="WARNING",
            documentation=gcp.monitoring.AlertPolicyDocumentationArgs(
                content=documentation, mime_type="text/markdown"
            ),
            opts=opts,
        )
