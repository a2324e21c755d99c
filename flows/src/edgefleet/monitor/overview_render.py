"""The fleet overview rendered for people: Markdown with text bars (a Prefect artifact) and a self-contained
HTML page with SVG charts (`edgefleet fleet status --html FILE`): no script, no stylesheet or font fetched,
so it opens anywhere, offline, and can be mailed as one file.

Charts: the devices on each version over time (stacked bars), and per version the latency and top-1 score
distributions (share of inferences per histogram bucket, one line per version).
"""

from __future__ import annotations

from datetime import datetime
from html import escape

from edgefleet.kernel.contracts.distributions import LATENCY_MIN_MS, SCORE_BUCKETS, latency_edges_ms
from edgefleet.monitor.drift_view import ACCURACY_CAVEAT, WHAT_IT_SEES
from edgefleet.monitor.overview import FleetOverview, VersionStats
from edgefleet.monitor.spotcheck import SPOT_CHECK_CAVEAT, Interval, SpotCheckReport

BAR_WIDTH = 24  # characters of a full text bar
FULL, PARTS = "█", " ▏▎▍▌▋▊▉"  # eighths of a block
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f")
CHART_W, CHART_H, MARGIN = 720, 240, 56
MAX_TEXT_ROWS = 24  # timeline rows in the Markdown (the newest)


def text_bar(value: float, maximum: float, width: int = BAR_WIDTH) -> str:
    """A bar of `width` characters at most, in eighths of a block: `value` out of `maximum`."""
    if maximum <= 0 or value <= 0:
        return ""
    eighths = round(min(value / maximum, 1.0) * width * 8)
    return FULL * (eighths // 8) + (PARTS[eighths % 8] if eighths % 8 else "")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def latency_label(index: int) -> str:
    """The range of latency bucket `index` in ms."""
    edges = latency_edges_ms()
    if index == 0:
        return f"< {LATENCY_MIN_MS:g}"
    if index >= len(edges):
        return f">= {edges[-1]:g}"
    return f"{edges[index - 1]:.3g}-{edges[index]:.3g}"


def score_label(index: int) -> str:
    return f"{index / SCORE_BUCKETS:.2f}-{(index + 1) / SCORE_BUCKETS:.2f}"


def _used_range(histograms: list[tuple[int, ...]]) -> range:
    used = [i for h in histograms for i, n in enumerate(h) if n]
    return range(min(used), max(used) + 1) if used else range(0)


# --- Markdown -------------------------------------------------------------------------------------------
def _histogram_markdown(title: str, versions: tuple[VersionStats, ...], attr: str, label) -> list[str]:
    histograms = [getattr(v, attr) for v in versions]
    buckets = _used_range(histograms)
    if not buckets:
        return [f"### {title}", "", "no data yet", ""]
    lines = [f"### {title}", "", "| bucket | " + " | ".join(f"{v.version}" for v in versions) + " |",
             "|---|" + "---|" * len(versions)]
    totals = [sum(h) or 1 for h in histograms]
    for index in buckets:
        if not any(h[index] for h in histograms):
            continue
        cells = [f"{text_bar(h[index] / t, 1.0)} {h[index] / t:.0%}" if h[index] else ""
                 for h, t in zip(histograms, totals, strict=True)]
        lines.append(f"| {label(index)} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def to_markdown(overview: FleetOverview) -> str:
    """The overview as Markdown tables with text bars (what a Prefect markdown artifact shows)."""
    o = overview
    lines = [f"## Fleet overview: {o.model}", "",
             f"{o.devices} devices: {o.healthy} healthy, {o.stale} stale, {o.failing} failing "
             f"(at {_time(o.generated_at)}, data since {_time(o.since)})", "",
             "### Versions now", "", "| version | devices | | inferences | errors | p50 ms | p95 ms |",
             "|---|---:|---|---:|---:|---:|---:|"]
    most = max((v.devices_now for v in o.versions), default=0)
    for v in o.versions:
        lines.append(f"| {v.version} | {v.devices_now} | {text_bar(v.devices_now, most)} | {v.inferences} | "
                     f"{v.errors} | {_ms(v.latency_p50_ms)} | {_ms(v.latency_p95_ms)} |")
    lines += ["", f"### Devices per version over time ({o.slot_s:g} s slots, newest last)", ""]
    names = o.version_names
    if o.timeline:
        lines += ["| time | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for slot in o.timeline[-MAX_TEXT_ROWS:]:
            cells = [f"{text_bar(slot.devices.get(n, 0), o.devices or 1, 12)} {slot.devices.get(n, '')}"
                     for n in names]
            lines.append(f"| {slot.start.strftime('%H:%M:%S')} | " + " | ".join(cells) + " |")
        lines.append("")
    else:
        lines += ["no telemetry yet", ""]
    lines += _drift_markdown(o)
    lines += _spot_check_markdown(o.spot_check)
    lines += _histogram_markdown("Latency (ms): share of inferences", o.versions, "latency", latency_label)
    lines += _histogram_markdown("Top-1 score: share of inferences", o.versions, "score", score_label)
    return "\n".join(lines)


def _watch_line(o: FleetOverview) -> str:
    counts = ", ".join(f"{n} {status}" for status, n in sorted(o.drift_watch.items())) or "no device watched yet"
    return f"Drift watch: {counts}."


def _drift_markdown(o: FleetOverview) -> list[str]:
    lines = ["### Drift (each device against its own baseline)", "", _watch_line(o), "", WHAT_IT_SEES, "",
             ACCURACY_CAVEAT, ""]
    if o.drifting:
        lines += ["| device | version | drift | since | est. accuracy |", "|---|---|---|---|---|"]
        lines += [f"| {e.device_id} | {e.model_version} | {e.drift.summary()} | "
                  f"{_time(e.drift.since) if e.drift.since else '-'} | {e.drift.accuracy_text()} |"
                  for e in o.drifting]
        lines.append("")
    return lines


def _drift_html(o: FleetOverview) -> str:
    rows = "".join(f"<tr><td>{escape(e.device_id)}</td><td>{escape(e.model_version)}</td>"
                   f"<td>{escape(e.drift.summary())}</td>"
                   f"<td>{_time(e.drift.since) if e.drift.since else '-'}</td>"
                   f"<td>{escape(e.drift.accuracy_text())}</td></tr>" for e in o.drifting)
    table = (f"<table><thead><tr><th>device</th><th>version</th><th>drift</th><th>since</th>"
             f"<th>est. accuracy</th></tr></thead><tbody>{rows}</tbody></table>") if rows else ""
    return (f'<section id="drift"><h2>Drift (each device against its own baseline)</h2>'
            f"<p>{escape(_watch_line(o))}</p><p>{escape(WHAT_IT_SEES)}</p><p>{escape(ACCURACY_CAVEAT)}</p>"
            f"{table}</section>")


def _interval(value: Interval | None, signed: bool = False) -> str:
    return "-" if value is None else value.text(signed=signed)


SPOT_CHECK_COLUMNS = ("version", "devices", "labelled frames", "labelled accuracy", "est. accuracy",
                      "estimate off by")


def spot_check_rows(report: SpotCheckReport) -> list[tuple[str, ...]]:
    """One row a model version: its devices and labelled frames, the labelled accuracy (95 % interval), the
    devices' estimate weighted as their labels and how far it is off (over how many devices)."""
    return [(v.model_version, str(v.devices), str(v.labelled), v.accuracy.text(), _interval(v.estimated),
             _interval(v.bias, signed=True) + (f" ({v.bias_devices} device(s))" if v.bias is not None else ""))
            for v in report.versions]


def _spot_check_markdown(report: SpotCheckReport | None) -> list[str]:
    if report is None:
        return []
    lines = ["### Labelled spot check", ""]
    if report.error is not None:
        return [*lines, f"labels not read from {report.registry}: {report.error}", ""]
    if not report.versions:
        return [*lines, "no labelled frames on the versions the devices shown run", ""]
    lines += [SPOT_CHECK_CAVEAT, "", "| " + " | ".join(SPOT_CHECK_COLUMNS) + " |",
              "|---|" + "---:|" * (len(SPOT_CHECK_COLUMNS) - 1)]
    return [*lines, *("| " + " | ".join(row) + " |" for row in spot_check_rows(report)), ""]


def _spot_check_html(report: SpotCheckReport | None) -> str:
    if report is None:
        return ""
    head = '<section id="spot-check"><h2>Labelled spot check</h2>'
    if report.error is not None:
        return f"{head}<p>{escape(f'labels not read from {report.registry}: {report.error}')}</p></section>"
    if not report.versions:
        return f"{head}<p>no labelled frames on the versions the devices shown run</p></section>"
    header = "".join(f"<th>{escape(column)}</th>" for column in SPOT_CHECK_COLUMNS)
    rows = "".join(f'<tr data-version="{escape(row[0])}">' + "".join(f"<td>{escape(cell)}</td>" for cell in row)
                   + "</tr>" for row in spot_check_rows(report))
    return (f"{head}<p>{escape(SPOT_CHECK_CAVEAT)}</p><table><thead><tr>{header}</tr></thead>"
            f"<tbody>{rows}</tbody></table></section>")


# --- HTML -----------------------------------------------------------------------------------------------
def _color(names: tuple[str, ...], version: str) -> str:
    return PALETTE[names.index(version) % len(PALETTE)]


def _legend(names: tuple[str, ...]) -> str:
    items = "".join(f'<span class="key"><i style="background:{_color(names, n)}"></i>{escape(n)}</span>'
                    for n in names)
    return f'<div class="legend">{items}</div>'


def _axes(y_max: float, y_label: str, x_labels: list[tuple[float, str]]) -> str:
    plot_w, plot_h = CHART_W - 2 * MARGIN, CHART_H - 2 * MARGIN
    parts = [f'<line x1="{MARGIN}" y1="{MARGIN + plot_h}" x2="{MARGIN + plot_w}" y2="{MARGIN + plot_h}" '
             'stroke="#888"/>',
             f'<line x1="{MARGIN}" y1="{MARGIN}" x2="{MARGIN}" y2="{MARGIN + plot_h}" stroke="#888"/>',
             f'<text x="{MARGIN - 6}" y="{MARGIN + 4}" text-anchor="end">{escape(y_label.format(y_max))}</text>',
             f'<text x="{MARGIN - 6}" y="{MARGIN + plot_h}" text-anchor="end">0</text>']
    for x, label in x_labels:
        parts.append(f'<text x="{x:.1f}" y="{MARGIN + plot_h + 16}" text-anchor="middle">{escape(label)}</text>')
    return "".join(parts)


def _svg(title: str, body: str) -> str:
    return (f'<svg role="img" aria-label="{escape(title)}" viewBox="0 0 {CHART_W} {CHART_H}" width="{CHART_W}" '
            f'height="{CHART_H}" xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>{body}</svg>')


def timeline_svg(overview: FleetOverview) -> str:
    """Stacked bars: devices per version in each time slot."""
    names, slots = overview.version_names, overview.timeline
    if not slots:
        return "<p>no telemetry yet</p>"
    plot_w, plot_h = CHART_W - 2 * MARGIN, CHART_H - 2 * MARGIN
    y_max = max(max(sum(s.devices.values()) for s in slots), 1)
    width = plot_w / len(slots)
    bars = []
    for i, slot in enumerate(slots):
        y = MARGIN + plot_h
        for name in names:
            count = slot.devices.get(name, 0)
            if count:
                height = plot_h * count / y_max
                y -= height
                bars.append(f'<rect class="bar" data-version="{escape(name)}" x="{MARGIN + i * width:.1f}" '
                            f'y="{y:.1f}" width="{max(width - 1, 1):.1f}" height="{height:.1f}" '
                            f'fill="{_color(names, name)}"><title>{escape(slot.start.strftime("%H:%M:%S"))} '
                            f'{escape(name)}: {count}</title></rect>')
    step = max(1, len(slots) // 6)
    clock = "%H:%M" if overview.slot_s >= 60 else "%H:%M:%S"
    labels = [(MARGIN + (i + 0.5) * width, slots[i].start.strftime(clock)) for i in range(0, len(slots), step)]
    return _svg("devices per version over time", _axes(y_max, "{:g}", labels) + "".join(bars))


def histogram_svg(title: str, overview: FleetOverview, attr: str, label, full_range: bool = False) -> str:
    """Grouped bars: for each histogram bucket, each version's share of its inferences in it (the buckets in
    use, or all of them with `full_range`)."""
    names = overview.version_names
    histograms = {v.version: getattr(v, attr) for v in overview.versions if sum(getattr(v, attr))}
    buckets = _used_range(list(histograms.values()))
    if buckets and full_range:
        buckets = range(len(next(iter(histograms.values()))))
    if not buckets:
        return "<p>no data yet</p>"
    plot_w, plot_h = CHART_W - 2 * MARGIN, CHART_H - 2 * MARGIN
    shares = {name: [h[i] / sum(h) for i in buckets] for name, h in histograms.items()}
    y_max = max(max(values) for values in shares.values())
    group = plot_w / len(buckets)
    width = max((group - 2) / len(shares), 1)
    bars = []
    for k, index in enumerate(buckets):
        for j, (name, values) in enumerate(shares.items()):
            if values[k]:
                height = plot_h * values[k] / y_max
                bars.append(f'<rect class="bar" data-version="{escape(name)}" x="{MARGIN + k * group + j * width:.1f}" '
                            f'y="{MARGIN + plot_h - height:.1f}" width="{width:.1f}" height="{height:.1f}" '
                            f'fill="{_color(names, name)}"><title>{escape(name)} {escape(label(index))}: '
                            f'{values[k]:.1%}</title></rect>')
    every = max(1, len(buckets) // 6)
    labels = [(MARGIN + (k + 0.5) * group, label(index)) for k, index in enumerate(buckets) if k % every == 0]
    return _svg(title, _axes(y_max * 100, "{:.0f}%", labels) + "".join(bars))


STYLE = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}h1{font-size:1.4em}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}svg text{font-size:11px;fill:#444}
.legend .key{margin-right:1.2em}.legend i{display:inline-block;width:.9em;height:.9em;margin-right:.3em}
section{margin-bottom:2em}"""


def to_html(overview: FleetOverview) -> str:
    """A self-contained HTML page with the overview's tables and charts."""
    o = overview
    rows = "".join(
        f"<tr><td>{escape(v.version)}</td><td>{v.devices_now}</td><td>{v.inferences}</td><td>{v.errors}</td>"
        f"<td>{_ms(v.latency_p50_ms)}</td><td>{_ms(v.latency_p95_ms)}</td></tr>" for v in o.versions)
    legend = _legend(o.version_names)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>edgefleet fleet: {escape(o.model)}</title>
<style>{STYLE}</style></head><body>
<h1>edgefleet fleet: {escape(o.model)}</h1>
<p id="summary">{o.devices} devices: {o.healthy} healthy, {o.stale} stale, {o.failing} failing.
Generated {_time(o.generated_at)}, data since {_time(o.since)}.</p>
<section id="versions"><h2>Versions</h2><table><thead><tr><th>version</th><th>devices now</th><th>inferences</th>
<th>errors</th><th>p50 ms</th><th>p95 ms</th></tr></thead><tbody>{rows}</tbody></table></section>
{_drift_html(o)}
{_spot_check_html(o.spot_check)}
<section id="timeline"><h2>Devices per version over time</h2>{legend}{timeline_svg(o)}</section>
<section id="latency"><h2>Latency distribution per version (ms)</h2>{legend}
{histogram_svg("latency distribution per version", o, "latency", latency_label)}</section>
<section id="score"><h2>Top-1 score distribution per version</h2>{legend}
{histogram_svg("top-1 score distribution per version", o, "score", score_label, full_range=True)}</section>
</body></html>
"""
