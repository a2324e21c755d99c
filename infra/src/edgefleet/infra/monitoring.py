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


def monitor_written_nothing(minutes: int) -> gcp.monitoring.AlertPolicyConditionArgs:
    """Absence of the monitor's per-period telemetry count summed over the whole fleet: one series, so one
    incident when the monitor stops writing (not one per device, as the device-silent policy does)."""
    return gcp.monitoring.AlertPolicyConditionArgs(
        display_name=f"no telemetry count written for any device for {minutes} min",
        condition_absent=gcp.monitoring.AlertPolicyConditionConditionAbsentArgs(
            filter=fleet_metric_filter(TELEMETRY_MESSAGES),
            duration=f"{minutes * SECONDS_PER_MINUTE}s",
            aggregations=[
                gcp.monitoring.AlertPolicyConditionConditionAbsentAggregationArgs(
                    alignment_period=ALIGNMENT_PERIOD,
                    per_series_aligner="ALIGN_SUM",
                    cross_series_reducer="REDUCE_SUM",  # no group-by: the fleet is one series
                )
            ],
            trigger=gcp.monitoring.AlertPolicyConditionConditionAbsentTriggerArgs(count=1),
        ),
    )


def drift_conditions(threshold_sd: float) -> list[gcp.monitoring.AlertPolicyConditionArgs]:
    """One condition per drift statistic (its metric is the statistic's: the condition's name says which moved);
    the monitor writes the shift only while the device is in drift, 0 otherwise, so each point over the
    threshold is a drift (no duration: the drift watch already waited for its evidence)."""
    return [
        gcp.monitoring.AlertPolicyConditionArgs(
            display_name=f"{statistic} moved more than {threshold_sd:g} baseline SDs",
            condition_threshold=gcp.monitoring.AlertPolicyConditionConditionThresholdArgs(
                filter=fleet_metric_filter(metric),
                comparison="COMPARISON_GT",
                threshold_value=threshold_sd,
                duration="0s",
                aggregations=[
                    gcp.monitoring.AlertPolicyConditionConditionThresholdAggregationArgs(
                        alignment_period=ALIGNMENT_PERIOD, per_series_aligner="ALIGN_MAX"
                    )
                ],
                trigger=gcp.monitoring.AlertPolicyConditionConditionThresholdTriggerArgs(count=1),
            ),
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
        self.descriptors = {metric.type: self._descriptor(name, metric) for metric in ALL_METRICS}
        after_descriptors = self._child(*self.descriptors.values())
        # Alert policies on a custom metric fail to create before its descriptor exists and its type is
        # visible: wait for both.
        self.metric_propagation = pulumiverse_time.Sleep(
            f"{name}-new-metric-types",
            create_duration=f"{args.alerts.new_metric_wait_seconds}s",
            triggers=metric_types_trigger(ALL_METRICS),
            opts=after_descriptors,
        )
        after_metric_types = self._child(self.metric_propagation)

        self.dashboard = gcp.monitoring.Dashboard(
            f"{name}-dashboard",
            project=args.project,
            dashboard_json=json.dumps(
                dashboard(args.fleet_name, args.monitor_subscription, args.dead_letter_subscription)
            ),
            opts=after_descriptors,
        )

        alerts = args.alerts
        self.silent_device_alert = self._policy(
            f"{name}-device-silent",
            f"{args.fleet_name}: device silent",
            gcp.monitoring.AlertPolicyConditionArgs(
                display_name=f"no telemetry from a device for {alerts.silent_minutes} min",
                condition_absent=gcp.monitoring.AlertPolicyConditionConditionAbsentArgs(
                    filter=fleet_metric_filter(TELEMETRY_MESSAGES),
                    duration=f"{alerts.silent_minutes * SECONDS_PER_MINUTE}s",
                    # One series per device whatever model version it runs, so a model swap (a new
                    # model_version series) does not look like silence.
                    aggregations=[
                        gcp.monitoring.AlertPolicyConditionConditionAbsentAggregationArgs(
                            alignment_period=ALIGNMENT_PERIOD,
                            per_series_aligner="ALIGN_SUM",
                            cross_series_reducer="REDUCE_SUM",
                            group_by_fields=["metric.label.device_id"],
                        )
                    ],
                    trigger=gcp.monitoring.AlertPolicyConditionConditionAbsentTriggerArgs(count=1),
                ),
            ),
            f"Device ${{metric.label.device_id}} has sent no telemetry for {alerts.silent_minutes} "
            "minutes.\n\n"
            "Check `edgefleet fleet status`, the device's network and its agent (`systemctl status "
            "edgefleet-agent`); its spool keeps telemetry until it can publish again.",
            after_metric_types,
        )
        self.latency_alert = self._policy(
            f"{name}-latency-p95",
            f"{args.fleet_name}: inference latency p95 over {alerts.latency_p95_ms:g} ms",
            threshold_condition(
                f"p95 latency > {alerts.latency_p95_ms:g} ms for {alerts.latency_for_minutes} min",
                fleet_metric_filter(INFERENCE_LATENCY_P95),
                threshold=alerts.latency_p95_ms,
                minutes=alerts.latency_for_minutes,
                aligner="ALIGN_MEAN",
            ),
            "Device ${metric.label.device_id} runs ${metric.label.model} "
            "${metric.label.model_version} with a "
            f"p95 inference latency over {alerts.latency_p95_ms:g} ms.\n\nA model that fell back to the CPU "
            "(no Edge TPU, or ops not mapped to the TPU) is the usual cause: see "
            "`edgefleet fleet status` and "
            "the release's compiler report; roll back with `edgefleet rollout` if a new version caused it.",
            after_metric_types,
        )
        self.dead_letter_alert = self._policy(
            f"{name}-dead-letters",
            f"{args.fleet_name}: telemetry dead-lettered",
            threshold_condition(
                f"more than {alerts.dead_letter_messages} message(s) in {args.dead_letter_subscription}",
                subscription_filter(PUBSUB_UNDELIVERED_MESSAGES, args.dead_letter_subscription),
                threshold=alerts.dead_letter_messages,
                minutes=1,
                aligner="ALIGN_MAX",
            ),
            "Telemetry the fleet monitor could not process was moved to "
            f"`{args.dead_letter_subscription}`.\n\n"
            "Pull a few to see why (`gcloud pubsub subscriptions pull "
            f"{args.dead_letter_subscription} --limit 5`): malformed messages from an old agent, "
            "or a monitor "
            "that crashes on them.",
            self._child(),  # a built-in Pub/Sub metric: nothing to wait for
        )
        self.monitor_stopped_alert = self._policy(
            f"{name}-monitor-stopped",
            f"{args.fleet_name}: fleet monitor stopped",
            monitor_written_nothing(alerts.silent_minutes),
            f"The fleet monitor has written no telemetry count for any device for {alerts.silent_minutes} "
            f"minutes.\n\nEither the monitor stopped (check the `fleet-monitor` flow run in Prefect and its "
            f"worker; `gcloud pubsub subscriptions describe {args.monitor_subscription}` shows telemetry piling "
            "up), or every device went silent at once (network, registry, credentials). One incident for the "
            "whole fleet: the per-device silence alerts say which devices.",
            after_metric_types,
            extra_conditions=[threshold_condition(
                f"telemetry unconsumed in {args.monitor_subscription} for over {alerts.silent_minutes} min",
                subscription_filter(PUBSUB_OLDEST_UNACKED_AGE, args.monitor_subscription),
                threshold=alerts.silent_minutes * SECONDS_PER_MINUTE,
                minutes=1,
                aligner="ALIGN_MAX",
            )],
        )
        first, *others = drift_conditions(alerts.drift_sd)
        self.drift_alert = self._policy(
            f"{name}-drift",
            f"{args.fleet_name}: device drift",
            first,
            "Device ${metric.label.device_id} (${metric.label.model} ${metric.label.model_version}): "
            "${condition.display_name}. The incident's value is the shift since its onset in the device's own "
            "baseline SDs (each device is compared with its first blocks on this version, not with the lab's "
            "reference).\n\n`edgefleet fleet status` shows the drift column (which way and by how much in the "
            "statistic's units) and `edgefleet fleet device` the device; look at its camera (moved, fogged, "
            "night) or its model. A drift says the scene or the model's output changed, not whether the "
            "answers are right. Once the new scene is accepted: `edgefleet fleet drift-accept <device>` (a new "
            "baseline).",
            after_metric_types,
            extra_conditions=others,
        )
        self.register_outputs({"dashboard": self.dashboard.id})

    def _descriptor(self, name: str, metric: MetricDefinition) -> gcp.monitoring.MetricDescriptor:
        return gcp.monitoring.MetricDescriptor(
            f"{name}-{metric.short_name.replace('/', '-').replace('_', '-')}",
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
        resource_name: str,
        display_name: str,
        condition: gcp.monitoring.AlertPolicyConditionArgs,
        documentation: str,
        opts: pulumi.ResourceOptions,
        extra_conditions: Sequence[gcp.monitoring.AlertPolicyConditionArgs] = (),
    ) -> gcp.monitoring.AlertPolicy:
        return gcp.monitoring.AlertPolicy(
            resource_name,
            project=self._args.project,
            display_name=display_name,
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
