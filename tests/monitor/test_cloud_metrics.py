"""Cloud Monitoring time series built from the fleet state: exactly what is sent, and how often."""

from __future__ import annotations

import logging
import time
from collections import Counter
from datetime import timedelta

from google.api_core import exceptions as google_exceptions
from google.cloud import monitoring_v3
from monitor_helpers import T0, RunningMonitor, telemetry, wait_until

from edgefleet.kernel.metrics import ALL_METRICS, DRIFT_METRICS
from edgefleet.monitor.cloud_metrics import (
    DEVICE_VALUES,
    PERIOD_COUNT_METRICS,
    PeriodAggregator,
    build_time_series,
    write_time_series,
)
from edgefleet.monitor.config import CloudMetricsConfig
from edgefleet.monitor.ingest import apply
from edgefleet.monitor.query import device_statuses
from edgefleet.monitor.store import commit

API_MAX_SERIES = 200


class RecordingMetricServiceClient:
    """Stand-in for `google.cloud.monitoring_v3.MetricServiceClient` (Cloud Monitoring has no emulator).

    Same `create_time_series(request=None, *, name, time_series, retry, timeout, metadata)` signature; keeps
    every request as the real `CreateTimeSeriesRequest` proto, and refuses what the real API refuses for
    these writes (INVALID_ARGUMENT): more than 200 series, a series without exactly one point, one series
    twice in a request. `fail_next` makes the next calls fail with UNAVAILABLE, as an outage would.
    """

    def __init__(self, fail_next: int = 0) -> None:
        self.requests: list[monitoring_v3.CreateTimeSeriesRequest] = []
        self.fail_next = fail_next

    def create_time_series(self, request=None, *, name=None, time_series=None, retry=None, timeout=None,
                           metadata=()):
        if request is None:
            request = monitoring_v3.CreateTimeSeriesRequest(name=name, time_series=time_series)
        if self.fail_next:
            self.fail_next -= 1
            raise google_exceptions.ServiceUnavailable("503 The service is currently unavailable.")
        if len(request.time_series) > API_MAX_SERIES:
            raise google_exceptions.InvalidArgument(f"{len(request.time_series)} time series in one request")
        keys = [(s.metric.type, tuple(sorted(s.metric.labels.items()))) for s in request.time_series]
        if len(set(keys)) != len(keys) or any(len(s.points) != 1 for s in request.time_series):
            raise google_exceptions.InvalidArgument("each series needs exactly one point per request")
        self.requests.append(request)


def value_of(series):
    value = series.points[0].value
    return getattr(value, value._pb.WhichOneof("value"))


def test_every_defined_metric_has_a_value():
    assert set(DEVICE_VALUES) | PERIOD_COUNT_METRICS == {metric.type for metric in ALL_METRICS}
    assert not set(DEVICE_VALUES) & PERIOD_COUNT_METRICS


def test_the_series_of_one_device_are_exactly_these(store):
    apply(store, telemetry("cam-1", 1, latency_ms=4.0, fps=25.0, count=9, errors=1, cpu_temp_c=51.5,
                           spool_depth=3, spool_dropped=2))
    commit(store)
    end = T0 + timedelta(seconds=60)
    devices = device_statuses(store, ["cam-1"], 120, end)
    series = build_time_series("demo-project", end, {("cam-1", "mobilenet", "1.0.0"): 1}, devices)

    model_labels = {"device_id": "cam-1", "model": "mobilenet", "model_version": "1.0.0"}
    device_labels = {"device_id": "cam-1"}

    def expected_series(name, labels, value_type, unit, value):
        return monitoring_v3.TimeSeries({
            "metric": {"type": f"custom.googleapis.com/edgefleet/{name}", "labels": labels},
            "resource": {"type": "global", "labels": {"project_id": "demo-project"}},
            "metric_kind": "GAUGE", "value_type": value_type, "unit": unit,
            "points": [{"interval": {"end_time": end},
                        "value": {"int64_value" if value_type == "INT64" else "double_value": value}}]})

    expected = [
        expected_series("inference/latency_p50", model_labels, "DOUBLE", "ms", 4.0),
        expected_series("inference/latency_p95", model_labels, "DOUBLE", "ms", 4.0),
        expected_series("inference/rate", model_labels, "DOUBLE", "1/s", 25.0),
        expected_series("inference/error_ratio", model_labels, "DOUBLE", "1", 1 / 9),
        expected_series("device/telemetry_messages", model_labels, "INT64", "1", 1),
        expected_series("device/cpu_temperature", device_labels, "DOUBLE", "{Cel}", 51.5),
        expected_series("device/memory_available", device_labels, "DOUBLE", "MiBy", 600.0),
        expected_series("device/uptime", device_labels, "DOUBLE", "s", 101.0),
        expected_series("device/spool_depth", device_labels, "INT64", "1", 3),
        expected_series("device/spool_dropped", device_labels, "INT64", "1", 2),
    ]
    assert series == expected

    client = RecordingMetricServiceClient()
    assert write_time_series(client, "demo-project", series, CloudMetricsConfig(enabled=True)) == 1
    assert client.requests == [monitoring_v3.CreateTimeSeriesRequest(name="projects/demo-project",
                                                                      time_series=expected)]


def test_only_devices_heard_from_get_points_and_unknown_values_are_left_out(store):
    apply(store, telemetry("cam-1", 1, cpu_temp_c=None))
    apply(store, telemetry("cam-2", 1))
    apply(store, telemetry("cam-3", 1, model=None))  # no model running: device metrics only
    commit(store)
    end = T0 + timedelta(seconds=60)
    heard = {("cam-1", "mobilenet", "1.0.0"): 2, ("cam-3", "", ""): 1}
    series = build_time_series("p", end, heard, device_statuses(store, ["cam-1", "cam-2", "cam-3"], 120, end))
    devices = {s.metric.labels["device_id"] for s in series}
    assert devices == {"cam-1", "cam-3"}
    types_cam1 = {s.metric.type for s in series if s.metric.labels["device_id"] == "cam-1"}
    assert "custom.googleapis.com/edgefleet/device/cpu_temperature" not in types_cam1
    types_cam3 = {s.metric.type for s in series if s.metric.labels["device_id"] == "cam-3"}
    assert not any("/inference/" in metric for metric in types_cam3)
    messages = {s.metric.labels["device_id"]: (dict(s.metric.labels), value_of(s)) for s in series
                if s.metric.type.endswith("telemetry_messages")}
    assert messages["cam-1"][1] == 2
    assert messages["cam-3"] == ({"device_id": "cam-3", "model": "", "model_version": ""}, 1)


def test_requests_hold_at_most_200_series_and_every_series_is_sent_once(store):
    heard = {}
    for number in range(45):
        device_id = f"cam-{number:02d}"
        apply(store, telemetry(device_id, 1))
        heard[(device_id, "mobilenet", "1.0.0")] = 1
    commit(store)
    end = T0 + timedelta(seconds=60)
    series = build_time_series("p", end, heard, device_statuses(store, [d for d, _, _ in heard], 120, end))
    client = RecordingMetricServiceClient()
    sent = write_time_series(client, "p", series, CloudMetricsConfig(enabled=True))
    assert len(series) == 45 * (len(ALL_METRICS) - len(DRIFT_METRICS))  # no drift point while baselining
    assert sent == len(client.requests) == 3
    assert [len(r.time_series) for r in client.requests] == [200, 200, 50]
    assert all(r.name == "projects/p" for r in client.requests)
    keys = Counter((s.metric.type, tuple(sorted(s.metric.labels.items())))
                   for r in client.requests for s in r.time_series)
    assert len(keys) == len(series) and set(keys.values()) == {1}


def test_a_refused_request_is_logged_and_the_others_still_go(store, caplog):
    for number in range(25):
        apply(store, telemetry(f"cam-{number:02d}", 1))
    commit(store)
    end = T0 + timedelta(seconds=60)
    heard = {(f"cam-{n:02d}", "mobilenet", "1.0.0"): 1 for n in range(25)}
    series = build_time_series("p", end, heard, device_statuses(store, [k[0] for k in heard], 120, end))
    client = RecordingMetricServiceClient(fail_next=1)
    with caplog.at_level(logging.WARNING, logger="edgefleet.monitor.cloud_metrics"):
        sent = write_time_series(client, "p", series, CloudMetricsConfig(enabled=True))
    assert sent == 1 and [len(r.time_series) for r in client.requests] == [50]
    assert "Cloud Monitoring refused 200 time series for project p" in caplog.text


def test_the_aggregator_closes_a_period_only_when_it_is_over():
    from edgefleet.monitor.ingest import Outcome, Status

    aggregator = PeriodAggregator(60.0, start=1000.0)
    aggregator.record([Outcome(Status.APPLIED, "cam-1", 1, model_name="m", model_version="1.0.0"),
                       Outcome(Status.LATE, "cam-1", 0, model_name="m", model_version="1.0.0"),
                       Outcome(Status.DUPLICATE, "cam-1", 1, model_name="m", model_version="1.0.0"),
                       Outcome(Status.MALFORMED, "cam-2")])
    assert not aggregator.due(1059.9)
    assert aggregator.due(1060.0)
    assert aggregator.close_period(1060.0) == {("cam-1", "m", "1.0.0"): 2}
    assert aggregator.close_period(1120.0) == {}
    assert not aggregator.due(1179.0)


def test_the_monitor_writes_one_point_per_series_per_period(telemetry_topic, monitor_config):
    """End to end: messages through the emulator, periods advanced by the monitor's clock."""
    offset = [0.0]
    client = RecordingMetricServiceClient()
    config = monitor_config.model_copy(update={
        "cloud_metrics": CloudMetricsConfig(enabled=True, period_s=60.0)})
    running = RunningMonitor(config, kwargs={"metrics_client": client, "clock": lambda: time.time() + offset[0]})
    try:
        for seq in (1, 2, 3):
            telemetry_topic.publish(telemetry("cam-1", seq))
        telemetry_topic.publish(telemetry("cam-2", 1))
        wait_until(lambda: len(running.outcomes) == 4, "4 messages ingested")
        assert client.requests == []  # the first period is not over
        offset[0] += 61.0
        wait_until(lambda: client.requests, "the first period's request")
        offset[0] += 61.0  # a period in which nobody was heard: nothing is written
        time.sleep(0.5)
    finally:
        report = running.stop()
    assert report.metric_periods == 1
    assert len(client.requests) == 1
    series = client.requests[0].time_series
    messages = {s.metric.labels["device_id"]: value_of(s) for s in series
                if s.metric.type.endswith("telemetry_messages")}
    assert messages == {"cam-1": 3, "cam-2": 1}
    assert len(series) == 2 * (len(ALL_METRICS) - len(DRIFT_METRICS))  # no drift point while baselining


def test_a_device_in_drift_writes_how_far_the_statistic_that_moved_went_and_zero_for_the_others(store):
    from edgefleet.monitor.drift_view import DeviceDrift

    for device_id in ("cam-1", "cam-2", "cam-3"):
        apply(store, telemetry(device_id, 1))
    commit(store)
    end = T0 + timedelta(seconds=60)
    heard = {(device_id, "mobilenet", "1.0.0"): 1 for device_id in ("cam-1", "cam-2", "cam-3")}
    drifts = {"cam-1": DeviceDrift(status="drift", blocks=600, statistic="score_median", direction="down",
                                   effect_sd=-2.5, effect=-0.2),
              "cam-2": DeviceDrift(status="watching", blocks=600),
              "cam-3": DeviceDrift(status="baseline", blocks=20)}
    devices = [device.model_copy(update={"drift": drifts[device.device_id]})
               for device in device_statuses(store, [d for d, _, _ in heard], 120, end)]
    drift_points = {(s.metric.labels["device_id"], s.metric.type.rsplit("/", 1)[-1]): value_of(s)
                    for s in build_time_series("p", end, heard, devices) if "/drift/" in s.metric.type}
    assert drift_points == {("cam-1", "score_median_sd"): 2.5, ("cam-1", "class_mix_sd"): 0.0,
                            ("cam-1", "detections_sd"): 0.0, ("cam-2", "score_median_sd"): 0.0,
                            ("cam-2", "class_mix_sd"): 0.0, ("cam-2", "detections_sd"): 0.0}
