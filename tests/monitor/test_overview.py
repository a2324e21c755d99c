"""The fleet overview: versions over time and per-version distributions from the fleet state, rendered as a
Markdown artifact with text bars and as a self-contained HTML page (`edgefleet fleet status --html`)."""

from __future__ import annotations

import re
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgefleet.cli import app
from edgefleet.flows.registry import LocalRegistryWriter
from edgefleet.kernel.console import ERROR_EXIT_CODE
from edgefleet.kernel.contracts import distributions as d
from edgefleet.kernel.contracts.spotcheck import LabelledSample, SpotLabels, labels_key
from edgefleet.kernel.contracts.telemetry import TelemetryMessage
from edgefleet.monitor.ingest import apply
from edgefleet.monitor.overview import fleet_overview, quantile_ms, slot_seconds
from edgefleet.monitor.overview_render import spot_check_rows, text_bar, to_html, to_markdown
from edgefleet.monitor.query import fleet_status
from edgefleet.monitor.spotcheck import Interval, SpotCheckReport, spot_check, version_spot_checks
from edgefleet.monitor.store import commit, open_store
from tests.spot_samples import SIGNING_KEY_ID, enrolment_public_key_file

from .monitor_helpers import T0, telemetry

runner = CliRunner()


def _with_dist(message: TelemetryMessage, dist: d.Distributions) -> TelemetryMessage:
    return message.model_copy(update={"inference": message.inference.model_copy(update={"dist": dist})})


def _fleet(store) -> None:
    """a and b on 1.0.0 for 10 minutes; then b moves to 2.0.0 (slower, less sure) while a stays."""
    fast, slow = d.build(latency={10: 90, 11: 10}, score={19: 100}), d.build(latency={30: 100}, score={10: 100})
    for minute in range(10):
        for seq_base, device in ((0, "a"), (100, "b")):
            apply(store, _with_dist(telemetry(device, seq_base + minute + 1, at=T0 + timedelta(minutes=minute),
                                              count=100), fast))
    for minute in range(10, 20):
        apply(store, _with_dist(telemetry("a", minute + 1, at=T0 + timedelta(minutes=minute), count=100), fast))
        apply(store, _with_dist(telemetry("b", 100 + minute + 1, at=T0 + timedelta(minutes=minute), count=100,
                                          version="2.0.0", errors=3), slow))
    commit(store)


def _overview(store):
    now = T0 + timedelta(minutes=20)
    return fleet_overview(store, fleet_status(store, 120.0, now), "mobilenet", now, slots=20)


def test_versions_over_time_and_their_distributions_come_from_the_fleet_state(store) -> None:
    _fleet(store)
    overview = _overview(store)
    assert overview.slot_s == 60.0 and len(overview.timeline) == 20
    assert overview.timeline[0].devices == {"1.0.0": 2}
    assert overview.timeline[-1].devices == {"1.0.0": 1, "2.0.0": 1}
    assert overview.version_names == ("1.0.0", "2.0.0")
    old, new = overview.versions
    assert (old.version, old.devices_now, old.inferences) == ("1.0.0", 1, 3000)
    assert (new.version, new.devices_now, new.inferences, new.errors) == ("2.0.0", 1, 1000, 30)
    assert old.score[19] == 3000 and new.score[10] == 1000 and sum(new.latency) == 1000
    assert new.latency_p50_ms > 10 * old.latency_p95_ms  # bucket 30 is two decades above bucket 10


def test_markdown_has_tables_with_text_bars(store) -> None:
    _fleet(store)
    markdown = to_markdown(_overview(store))
    assert "| 1.0.0 | 1 |" in markdown and "| 2.0.0 | 1 |" in markdown
    assert "Devices per version over time (60 s slots" in markdown
    # The 2.0.0 column of its score bucket is a full bar (100% of its inferences).
    row = next(line for line in markdown.splitlines() if line.startswith("| 0.50-0.55 |"))
    assert text_bar(1, 1) + " 100%" in row


def test_html_is_self_contained_and_draws_every_version(store) -> None:
    _fleet(store)
    page = to_html(_overview(store))
    assert not re.search(r"<script|<link|src=|@import|url\(", page)  # nothing fetched, nothing run

    class Bars(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.sections: dict[str, set[str]] = {}
            self.section = ""

        def handle_starttag(self, tag, attrs):
            values = dict(attrs)
            if tag == "section":
                self.section = values["id"]
            if tag == "rect" and "data-version" in values:
                self.sections.setdefault(self.section, set()).add(values["data-version"])

    parser = Bars()
    parser.feed(page)
    assert parser.sections == {name: {"1.0.0", "2.0.0"} for name in ("timeline", "latency", "score")}


def test_an_empty_fleet_state_renders_without_charts(store) -> None:
    overview = _overview(store)
    assert overview.timeline == () and overview.versions == ()
    assert "no telemetry yet" in to_markdown(overview) and "no data yet" in to_html(overview)


@pytest.mark.parametrize(("span", "bucket", "slots", "expected"),
                         [(3600, 60, 48, 120), (600, 5, 48, 15), (10, 5, 48, 5), (0, 5, 48, 5)])
def test_slots_are_whole_buckets(span: float, bucket: float, slots: int, expected: float) -> None:
    assert slot_seconds(span, bucket, slots) == expected


def test_quantiles_of_a_histogram() -> None:
    counts = [0] * d.LATENCY_BUCKETS
    counts[10], counts[20] = 50, 50
    assert quantile_ms(counts, 0.5) == d.latency_bucket_mid_ms(10)
    assert quantile_ms(counts, 0.95) == d.latency_bucket_mid_ms(20)
    assert quantile_ms([0] * 5, 0.5) is None


def test_text_bars_in_eighths() -> None:
    assert text_bar(1, 1, 4) == "████" and text_bar(1, 8, 1) == "▏" and text_bar(0, 1) == ""


def test_fleet_status_html_writes_the_page(tmp_path: Path) -> None:
    db = tmp_path / "fleet.sqlite"
    with open_store(db, latency_window=4, count_bucket_s=60.0) as store:
        _fleet(store)
    page = tmp_path / "overview.html"
    result = runner.invoke(app, ["fleet", "status", "--db", str(db), "--html", str(page), "--stale-after", "1e9"],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "edgefleet fleet: mobilenet" in page.read_text() and 'data-version="2.0.0"' in page.read_text()


def test_fleet_status_html_without_any_model_says_what_to_do(tmp_path: Path) -> None:
    db = tmp_path / "fleet.sqlite"
    with open_store(db, latency_window=4, count_bucket_s=60.0) as store:
        apply(store, telemetry("a", 1, model=None))
        commit(store)
    result = runner.invoke(app, ["fleet", "status", "--db", str(db), "--html", str(tmp_path / "o.html")])
    assert result.exit_code == ERROR_EXIT_CODE
    assert "no device reports a model" in result.output and "--model" in result.output
    assert not (tmp_path / "o.html").exists()


@pytest.mark.usefixtures("prefect_api")
def test_fleet_overview_flow_publishes_the_markdown_artifact_and_the_page(tmp_path: Path) -> None:
    import yaml
    from prefect.client.orchestration import get_client

    from edgefleet.flows.monitor.overview import FleetOverviewParams, artifact_key, fleet_overview_flow

    db = tmp_path / "fleet.sqlite"
    with open_store(db, latency_window=4, count_bucket_s=60.0) as store:
        _fleet(store)
    registry = tmp_path / "registry"  # device a's labelled spot check, shown per version on the page
    LocalRegistryWriter(registry, create=True).put_json(labels_key("a"), SpotLabels(
        device_id="a", updated_at=T0, samples=tuple(_labelled("mobilenet", 3, 4))))
    config = tmp_path / "monitor.yaml"
    config.write_text(yaml.safe_dump({"monitor": {"store_path": str(db), "count_bucket_s": 60.0,
                                                  "identity": {"registry": str(registry), "enrolment_keys": [
                                                      enrolment_public_key_file(tmp_path)]}}}))
    page = tmp_path / "overview.html"
    key = fleet_overview_flow(FleetOverviewParams(config=str(config), model="mobilenet", html=str(page)))
    assert key == artifact_key("mobilenet") == "fleet-overview-mobilenet"
    with get_client(sync_client=True) as client:
        artifact = client.read_latest_artifacts()
    latest = {item.key: item for item in artifact}[key]
    assert latest.type == "markdown" and "| 2.0.0 |" in str(latest.data)
    assert 'data-version="2.0.0"' in page.read_text()
    assert "| 1.0.0 | 1 | 4 | 0.75 (" in str(latest.data) and '<tr data-version="1.0.0"><td>1.0.0</td><td>1</td>' \
        '<td>4</td>' in page.read_text()


def _spot_check_report() -> SpotCheckReport:
    """mobilenet 1.0.0 labelled on two devices (one with an estimate), and another model's version."""
    estimate = Interval(value=0.9, low=0.88, high=0.92)
    results = [spot_check("a", "mobilenet", "1.0.0", _labelled("mobilenet", 30, 40), estimate),
               spot_check("b", "other", "1.0.0", _labelled("other", 1, 2))]
    devices = tuple(result for result in results if result is not None)
    return SpotCheckReport(registry="file:///registry", devices=devices, versions=version_spot_checks(devices))


def _labelled(model: str, right: int, labelled: int) -> list[LabelledSample]:
    return [LabelledSample(frame_id=f"20261207T210000Z-{i:012d}", model=model, model_version="1.0.0", answer_id=1,
                           answer_label="robin", answer_score=0.9, label="robin" if i < right else "crow",
                           correct=i < right, key_id=SIGNING_KEY_ID) for i in range(labelled)]


def test_the_page_and_the_markdown_show_the_spot_check_of_the_models_versions(store) -> None:
    _fleet(store)
    now = T0 + timedelta(minutes=20)
    status = fleet_status(store, 120.0, now).model_copy(update={"spot_check": _spot_check_report()})
    overview = fleet_overview(store, status, "mobilenet", now, slots=20)
    assert overview.spot_check is not None and [v.model for v in overview.spot_check.versions] == ["mobilenet"]
    row = ["1.0.0", "1", "40", "0.75 (0.60-0.86)", "0.90 (0.88-0.92)", "+0.15 (+0.04 to +0.30) (1 device(s))"]
    assert spot_check_rows(overview.spot_check) == [tuple(row)]
    page = to_html(overview)
    assert '<section id="spot-check">' in page
    assert '<tr data-version="1.0.0">' + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" in page
    assert "| " + " | ".join(row) + " |" in to_markdown(overview)


def test_the_page_says_when_the_labels_could_not_be_read(store) -> None:
    _fleet(store)
    failed = SpotCheckReport(registry="gs://bucket", error="gs://bucket/fleet/spotcheck-labels/a.json is <bad>")
    page = to_html(_overview(store).model_copy(update={"spot_check": failed}))
    assert "labels not read from gs://bucket: gs://bucket/fleet/spotcheck-labels/a.json is &lt;bad&gt;" in page
    assert '<section id="spot-check">' not in to_html(_overview(store))  # no registry configured: no section
