"""Telemetry: the topic, its Avro schema, the fleet-monitor subscription with dead-lettering, and the IAM the
Pub/Sub service agent needs for dead-lettering to work; optionally a BigQuery subscription for analytics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from edgefleet.infra.component import Component, ComponentArgs
from edgefleet.infra.config import BigQueryExport, TelemetrySettings
from edgefleet.infra.names import (
    ROLE_BIGQUERY_DATA_EDITOR,
    ROLE_PUBSUB_PUBLISHER,
    ROLE_PUBSUB_SUBSCRIBER,
)
from edgefleet.kernel.contracts import layout
from edgefleet.kernel.contracts.telemetry import telemetry_avro_definition

# Columns Pub/Sub writes with `write_metadata` and no topic schema mapping (the message stays JSON text).
BIGQUERY_TABLE_SCHEMA = [
    {"name": "subscription_name", "type": "STRING", "mode": "NULLABLE"},
    {"name": "message_id", "type": "STRING", "mode": "NULLABLE"},
    {"name": "publish_time", "type": "TIMESTAMP", "mode": "NULLABLE"},
    {"name": "data", "type": "STRING", "mode": "NULLABLE", "description": "the telemetry message (JSON)"},
    {"name": "attributes", "type": "STRING", "mode": "NULLABLE", "description": "device_id, model_version"},
]
BIGQUERY_SUBSCRIPTION = "edgefleet-telemetry-bigquery"
NEVER_EXPIRE = ""  # an empty TTL: the subscription never expires for inactivity


@dataclass(frozen=True, kw_only=True)
class TelemetryArgs(ComponentArgs):
    """What the telemetry component needs.

    Attributes:
        project: Google Cloud project id.
        service_agent: IAM member of the project's Pub/Sub service agent (from its ServiceIdentity).
        settings: Retention, ack deadline, dead-letter attempts, schema enforcement.
        labels: Put on every labelled resource.
        bigquery: The optional BigQuery export.
        bigquery_location: Dataset location when the export does not name one.
        depends_on: What every resource waits for (the enabled APIs, the service identity).
    """

    service_agent: pulumi.Input[str]
    settings: TelemetrySettings
    labels: dict[str, str]
    bigquery: BigQueryExport | None = None
    bigquery_location: str = "US"


def _seconds(value: int) -> str:
    return f"{value}s"


def _topic_path(project: str, topic: gcp.pubsub.Topic) -> pulumi.Output[str]:
    """`projects/<p>/topics/<name>` from the topic's name, which (unlike its id) is known at preview, so
    policy checks over `pulumi preview --json` can follow the reference."""
    return topic.name.apply(lambda name: f"projects/{project}/topics/{name}")


class Telemetry(Component):
    """The telemetry pipeline on Pub/Sub.

    Attributes:
        schema, topic, dead_letter_topic, monitor_subscription, dead_letter_subscription: the resources.
        service_agent: IAM member string of the project's Pub/Sub service agent.
        bigquery_table: The export table, or None; bigquery_table_ref its `project.dataset.table`.
    """

    def __init__(self, name: str, args: TelemetryArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("edgefleet:infra:Telemetry", name, args, opts)
        self.service_agent = args.service_agent
        self.schema = self._schema(name, args)
        self.topic, self.dead_letter_topic = self._topics(name, args)
        self.monitor_subscription = self._dead_lettered_subscription(
            f"{name}-monitor-subscription", args, layout.MONITOR_SUBSCRIPTION
        )
        self.dead_letter_subscription = self._subscription(
            f"{name}-dead-letter-subscription", args, layout.DEAD_LETTER_SUBSCRIPTION, self.dead_letter_topic.name,
            self._child(),
        )
        self._dead_lettering_grants(name, args)

        self.bigquery_table: gcp.bigquery.Table | None = None
        self.bigquery_table_ref: pulumi.Output[str] | None = None
        self.bigquery_subscription: gcp.pubsub.Subscription | None = None
        if args.bigquery is not None:
            self._bigquery(name, args, args.bigquery)

        self.register_outputs(
            {
                "topic": self.topic.name,
                "schema": self.schema.id,
                "monitor_subscription": self.monitor_subscription.name,
                "dead_letter_topic": self.dead_letter_topic.name,
                "dead_letter_subscription": self.dead_letter_subscription.name,
            }
        )

    def _schema(self, name: str, args: TelemetryArgs) -> gcp.pubsub.Schema:
        """The telemetry contract's Avro schema (attached to the topic when `enforce_schema`)."""
        return gcp.pubsub.Schema(
            f"{name}-schema",
            project=args.project,
            name=layout.TELEMETRY_SCHEMA,
            type="AVRO",
            definition=telemetry_avro_definition(),
            opts=self._child(),
        )

    def _topics(self, name: str, args: TelemetryArgs) -> tuple[gcp.pubsub.Topic, gcp.pubsub.Topic]:
        """The telemetry topic (validating messages against the schema when `enforce_schema`) and the
        dead-letter topic."""
        schema_settings = (
            gcp.pubsub.TopicSchemaSettingsArgs(schema=self.schema.id, encoding="JSON")
            if args.settings.enforce_schema
            else None
        )
        topic = self._topic(f"{name}-topic", layout.TELEMETRY_TOPIC, args, schema_settings, self._child(self.schema))
        dead_letter_topic = self._topic(
            f"{name}-dead-letter-topic", layout.TELEMETRY_DEAD_LETTER_TOPIC, args, None, self._child()
        )
        return topic, dead_letter_topic

    def _dead_lettering_grants(self, name: str, args: TelemetryArgs) -> None:
        """Dead-lettering is done by the Pub/Sub service agent: it must publish to the dead-letter topic and
        acknowledge (subscribe to) the source subscription, or messages are redelivered forever."""
        gcp.pubsub.TopicIAMMember(
            f"{name}-dead-letter-publisher",
            project=args.project,
            topic=self.dead_letter_topic.name,
            role=ROLE_PUBSUB_PUBLISHER,
            member=self.service_agent,
            opts=self._child(),
        )
        self._service_agent_subscriber(f"{name}-monitor-subscription-agent", args, self.monitor_subscription)

    def _subscription(
        self,
        resource_name: str,
        args: TelemetryArgs,
        name: str,
        topic: pulumi.Input[str],
        opts: pulumi.ResourceOptions,
        dead_letter_policy: gcp.pubsub.SubscriptionDeadLetterPolicyArgs | None = None,
        retry_policy: gcp.pubsub.SubscriptionRetryPolicyArgs | None = None,
        bigquery_config: gcp.pubsub.SubscriptionBigqueryConfigArgs | None = None,
    ) -> gcp.pubsub.Subscription:
        """A subscription that never expires, with the settings' ack deadline and retention."""
        settings = args.settings
        return gcp.pubsub.Subscription(
            resource_name,
            project=args.project,
            name=name,
            topic=topic,
            labels=args.labels,
            ack_deadline_seconds=settings.ack_deadline_seconds,
            message_retention_duration=_seconds(settings.subscription_retention_seconds),
            expiration_policy=gcp.pubsub.SubscriptionExpirationPolicyArgs(ttl=NEVER_EXPIRE),
            dead_letter_policy=dead_letter_policy,
            retry_policy=retry_policy,
            bigquery_config=bigquery_config,
            opts=opts,
        )

    def _dead_lettered_subscription(
        self,
        resource_name: str,
        args: TelemetryArgs,
        name: str,
        bigquery_config: gcp.pubsub.SubscriptionBigqueryConfigArgs | None = None,
        depends_on: list[pulumi.Resource] | None = None,
    ) -> gcp.pubsub.Subscription:
        """A subscription on the telemetry topic whose undeliverable messages go to the dead-letter topic."""
        settings = args.settings
        return self._subscription(
            resource_name,
            args,
            name,
            self.topic.name,
            self._child(*(depends_on or [])),
            dead_letter_policy=gcp.pubsub.SubscriptionDeadLetterPolicyArgs(
                dead_letter_topic=_topic_path(args.project, self.dead_letter_topic),
                max_delivery_attempts=settings.dead_letter_max_attempts,
            ),
            retry_policy=gcp.pubsub.SubscriptionRetryPolicyArgs(
                minimum_backoff=_seconds(settings.retry_minimum_backoff_seconds),
                maximum_backoff=_seconds(settings.retry_maximum_backoff_seconds),
            ),
            bigquery_config=bigquery_config,
        )

    def _service_agent_subscriber(
        self, resource_name: str, args: TelemetryArgs, subscription: gcp.pubsub.Subscription
    ) -> None:
        gcp.pubsub.SubscriptionIAMMember(
            resource_name,
            project=args.project,
            subscription=subscription.name,
            role=ROLE_PUBSUB_SUBSCRIBER,
            member=self.service_agent,
            opts=self._child(),
        )

    def _topic(
        self,
        resource_name: str,
        topic_name: str,
        args: TelemetryArgs,
        schema_settings: gcp.pubsub.TopicSchemaSettingsArgs | None,
        opts: pulumi.ResourceOptions,
    ) -> gcp.pubsub.Topic:
        """A topic keeping messages `message_retention_seconds` (the telemetry and the dead-letter topic)."""
        return gcp.pubsub.Topic(
            resource_name,
            project=args.project,
            name=topic_name,
            labels=args.labels,
            message_retention_duration=_seconds(args.settings.message_retention_seconds),
            schema_settings=schema_settings,
            opts=opts,
        )

    def _bigquery(self, name: str, args: TelemetryArgs, export: BigQueryExport) -> None:
        child = self._child()
        dataset = gcp.bigquery.Dataset(
            f"{name}-bigquery-dataset",
            project=args.project,
            dataset_id=export.dataset,
            location=export.location or args.bigquery_location,
            labels=args.labels,
            description="edgefleet telemetry, written by a Pub/Sub BigQuery subscription",
            opts=child,
        )
        self.bigquery_table = gcp.bigquery.Table(
            f"{name}-bigquery-table",
            project=args.project,
            dataset_id=dataset.dataset_id,
            table_id=export.table,
            labels=args.labels,
            schema=json.dumps(BIGQUERY_TABLE_SCHEMA),
            time_partitioning=gcp.bigquery.TableTimePartitioningArgs(type="DAY", field="publish_time"),
            deletion_protection=True,
            opts=child,
        )
        # The service agent writes the rows: data editor on this one table, nothing wider.
        writer = gcp.bigquery.IamMember(
            f"{name}-bigquery-writer",
            project=args.project,
            dataset_id=dataset.dataset_id,
            table_id=self.bigquery_table.table_id,
            role=ROLE_BIGQUERY_DATA_EDITOR,
            member=self.service_agent,
            opts=child,
        )
        table_ref = pulumi.Output.all(
            self.bigquery_table.project, self.bigquery_table.dataset_id, self.bigquery_table.table_id
        ).apply(lambda parts: ".".join(parts))
        self.bigquery_table_ref = table_ref
        subscription = self._dead_lettered_subscription(
            f"{name}-bigquery-subscription",
            args,
            BIGQUERY_SUBSCRIPTION,
            bigquery_config=gcp.pubsub.SubscriptionBigqueryConfigArgs(
                table=table_ref, write_metadata=True, use_topic_schema=False, drop_unknown_fields=False
            ),
            depends_on=[writer],
        )
        self.bigquery_subscription = subscription
        self._service_agent_subscriber(f"{name}-bigquery-subscription-agent", args, subscription)
