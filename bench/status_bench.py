"""`fleet status` at 1k / 10k / 100k devices on both fleet state engines (issue 23, item 2).

Run alone: `python -m bench.status_bench [--sizes 1000,10000,100000] [--engines sqlite,postgresql]`
(`python -m bench.monitor_bench` runs it after the ingest measurement).

For each engine and fleet size: fills a fresh fleet state through the monitor's own `apply` (one inference
message per device; every 50th device silent for an hour, every 20th with a failed swap, every 25th with
inference errors, 1 in 10 on the new version), then times `fleet_status` as `edgefleet fleet status` asks it:
the first page of `PAGE` devices with the fleet's version and status counts, and the failing devices only
(a filtered page). p50 / p95 over `repeats` calls. Baseline in the same run: the whole fleet listed (every
device row read and classified, what `fleet status` did before the aggregates), fewer repeats.
Goals (the issue): p95 < 100 ms at 100,000 devices on PostgreSQL, < 200 ms on SQLite.

PostgreSQL is Debian's postgresql-15 started on a temporary directory (`edgefleet.local.postgres`), or the
server at `--postgres-url` (an empty database: the benchmark creates its tables and fills them).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edgefleet.kernel.contracts.telemetry import Event, Health, InferenceSummary, ModelRef, ResultItem, TelemetryMessage

PAGE = 100  # devices on one page of `fleet status`
GOALS_MS = {"postgresql": 100.0, "sqlite": 200.0}
GOAL_SIZE = 100_000
DEFAULT_SIZES = (1_000, 10_000, 100_000)
COMMIT_EVERY = 1_000  # devices per fill transaction
BASELINE_REPEATS = 3
P95 = 0.95


@dataclass(frozen=True)
class StatusTiming:
    """One (engine, fleet size): fill rate and query times in ms."""

    engine: str
    devices: int
    fill_per_s: float
    page_p50: float
    page_p95: float
    failing_p95: float
    baseline_p95: float


def _message(device: int, seq: int, when: datetime, *, version: str, errors: int = 0,
             event: str | None = None) -> TelemetryMessage:
    return TelemetryMessage(
        device_id=f"cam-{device:06d}", seq=seq, time=when, kind="event" if event else "inference",
        model=ModelRef(name="mobilenet", version=version, variant="edgetpu", backend="edgetpu:usb:0"),
        inference=None if event else InferenceSummary(
            count=10, errors=errors, latency_ms_p50=5.0, latency_ms_p95=7.0, latency_ms_max=9.0, fps=30.0,
            window_s=1.0, top=[ResultItem(id=3, label="tabby cat", score=0.87)]),
        health=Health(cpu_temp_c=48.5, uptime_s=1000.0, mem_total_mb=1024.0, mem_available_mb=512.0,
                      load_1m=0.4, tpu_present=True, spool_depth=0, spool_dropped=0),
        event=Event(kind=event, detail="1.0.0 -> 1.1.0", model_version=version) if event else None)


def fill(store, devices: int, now: datetime) -> float:
    """Fills `store` with `devices` devices through `apply`; messages applied per second."""
    from edgefleet.monitor.ingest import apply
    from edgefleet.monitor.store import commit, to_epoch

    applied = 0
    start = time.perf_counter()
    for device in range(devices):
        received = now - timedelta(hours=1) if device % 50 == 0 else now
        version = "1.1.0" if device % 10 == 0 else "1.0.0"
        apply(store, _message(device, 1, received, version=version, errors=5 if device % 25 == 0 else 0),
              received_at=to_epoch(received))
        applied += 1
        if device % 20 == 0:
            apply(store, _message(device, 2, received, version=version, event="swap_failed"),
                  received_at=to_epoch(received))
            applied += 1
        if device % COMMIT_EVERY == COMMIT_EVERY - 1:
            commit(store)
    store.engine.analyze(store.connection)  # what the monitor's prune (and PostgreSQL's autovacuum) does
    commit(store)
    return applied / (time.perf_counter() - start)


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))]


def _time_ms(call: Callable[[], object], repeats: int) -> list[float]:
    timings = []
    for _ in range(repeats):
        begin = time.perf_counter()
        call()
        timings.append((time.perf_counter() - begin) * 1000)
    return timings


def measure(url: str, engine: str, devices: int, repeats: int) -> StatusTiming:
    """Fills a fresh state at `url` and times the status questions."""
    from edgefleet.monitor.aggregates import StatusFilter
    from edgefleet.monitor.config import MonitorConfig
    from edgefleet.monitor.query import fleet_status
    from edgefleet.monitor.store import open_store

    config = MonitorConfig()
    now = datetime.now(UTC)
    rules, stale = config.status, config.status.stale_after_s
    with open_store(url, latency_window=config.latency_window, count_bucket_s=config.count_bucket_s) as store:
        rate = fill(store, devices, now)
        page = _time_ms(lambda: fleet_status(store, stale, now, rules=rules, limit=PAGE), repeats)
        failing = _time_ms(lambda: fleet_status(store, stale, now, rules=rules, limit=PAGE,
                                                selection=StatusFilter(status="failing")), repeats)
        whole = _time_ms(lambda: fleet_status(store, stale, now, rules=rules), BASELINE_REPEATS)
        check = fleet_status(store, stale, now, rules=rules, limit=PAGE)
        if check.total != devices or len(check.devices) != min(PAGE, devices):
            raise RuntimeError(f"{engine}: fleet status counted {check.total} devices of {devices}")
    return StatusTiming(engine, devices, rate, statistics.median(page), _percentile(page, P95),
                        _percentile(failing, P95), _percentile(whole, P95))


@contextlib.contextmanager
def postgres_databases(url: str | None) -> Iterator[Callable[[], str]]:
    """A function giving an empty database per measurement: on `url`'s server, or on a throw-away one."""
    if url is not None:
        yield lambda: url
        return
    from edgefleet.local.postgres import postgres_server, unavailable_reason

    reason = unavailable_reason()
    if reason is not None:
        raise SystemExit(f"cannot start PostgreSQL for the benchmark: {reason}")
    with postgres_server() as server:
        yield server.new_database


def run(sizes: tuple[int, ...], engines: tuple[str, ...], repeats: int, postgres_url: str | None,
        console: Console) -> list[StatusTiming]:
    """Every (engine, size) measurement, in order; prints progress."""
    results = []
    with tempfile.TemporaryDirectory() as scratch, postgres_databases(
            postgres_url if "postgresql" in engines else "unused") as new_database:
        for engine in engines:
            for size in sizes:
                url = (f"sqlite:///{Path(scratch) / f'status-{size}.sqlite'}" if engine == "sqlite"
                       else new_database())
                console.print(f"{engine}: filling {size:,} devices and timing fleet status ...")
                results.append(measure(url, engine, size, repeats))
    return results


def table(results: list[StatusTiming]) -> Table:
    """The results, with goals and the whole-fleet baseline as ratios."""
    out = Table(title=f"fleet status (first page of {PAGE} + counts), ms")
    for column in ("engine", "devices", "fill msg/s", "page p50", "page p95", "failing-only p95",
                   "whole fleet p95 (baseline)", "baseline / page", "goal", "met"):
        out.add_column(column)
    for r in results:
        goal = GOALS_MS[r.engine]
        judged = r.devices == GOAL_SIZE
        out.add_row(r.engine, f"{r.devices:,}", f"{r.fill_per_s:,.0f}", f"{r.page_p50:.1f}", f"{r.page_p95:.1f}",
                    f"{r.failing_p95:.1f}", f"{r.baseline_p95:.1f}", f"{r.baseline_p95 / r.page_p95:.1f}x",
                    f"< {goal:.0f} ms at {GOAL_SIZE:,}" if judged else "-",
                    ("yes" if max(r.page_p95, r.failing_p95) < goal else "NO") if judged else "-")
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default=",".join(str(size) for size in DEFAULT_SIZES),
                        help="fleet sizes, comma-separated")
    parser.add_argument("--engines", default="sqlite,postgresql", help="sqlite, postgresql or both")
    parser.add_argument("--status-repeats", type=int, default=40, help="timed calls per question")
    parser.add_argument("--postgres-url", default=None, help="an empty database to use instead of a throw-away "
                                                            "server")


def main_from(args: argparse.Namespace, console: Console) -> None:
    sizes = tuple(int(size) for size in args.sizes.split(","))
    engines = tuple(engine.strip() for engine in args.engines.split(","))
    unknown = set(engines) - set(GOALS_MS)
    if unknown:
        raise SystemExit(f"unknown engine(s) {sorted(unknown)}: use sqlite, postgresql")
    console.print(table(run(sizes, engines, args.status_repeats, args.postgres_url, console)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    main_from(parser.parse_args(), Console(width=max(Console().width, 150)))


if __name__ == "__main__":
    main()
