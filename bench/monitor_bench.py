"""Fleet monitor benchmark: ingest throughput against raw streaming pull, and `fleet_status` at 1k-100k devices.

Run: `python -m bench.monitor_bench [--messages N] [--devices D] [--sizes 1000,10000,100000]
[--engines sqlite,postgresql] [--skip-ingest] [--keys-only] [--key-devices 10000] [--read-ms 20]`.

1. Starts its own official Pub/Sub emulator, creates the telemetry topic with two identical subscriptions
   and publishes N telemetry messages (D devices, real `TelemetryMessage` JSON), so both subscriptions hold
   the same backlog (one subscription more per engine).
2. Measures the raw streaming-pull rate of the first: a `SubscriberClient.subscribe` callback that only
   acks, with the monitor's flow control; then one monitor (`run_monitor`: validate, dedupe, batch commit,
   ack) taking in all of another, once per store engine (SQLite file; PostgreSQL). Goal: >= 0.8x raw.

   Why two subscriptions rather than one read twice: the emulator (0.8.20) fails to notice a streaming pull
   that the client closed (a NoSuchMethodError in its RST_STREAM handler, see its log), keeps sending that
   dead stream a share of the subscription's messages, and redelivers them only when their ack deadline
   (60 s) expires, so whichever reader comes second on a subscription is slowed by the emulator, not by
   itself. Real Pub/Sub does not do this.
3. Replicas (`--replicas N`, default 2; 0 skips): N `run_monitor` processes on one more subscription and one
   PostgreSQL database against 1 process on another (the same backlog), each timed from the moment every
   process of the run is ready (imported, configured) until the processes together have taken every
   message; the ratio N-replica rate / 1-replica rate is measured in the same run.
4. `fleet_status` at each fleet size on both engines (SQLite file; PostgreSQL started on a temporary
   directory): `bench.status_bench`, which says what it fills and times. Goals: p95 < 100 ms at 100,000
   devices on PostgreSQL, < 200 ms on SQLite; the whole-fleet listing is the baseline in the same run.
5. Device key reads at `--key-devices` on a registry stand-in with `--read-ms` per read (`--keys-only`: only
   this): `bench.key_refresh_bench`, which says what it measures (message-path latency during a key reload,
   reload times before and after the background, incremental refresh).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench import key_refresh_bench, status_bench
from edgefleet.kernel.contracts.telemetry import (
    Event,
    Health,
    InferenceSummary,
    ModelRef,
    ResultItem,
    TelemetryMessage,
)
from edgefleet.local.emulators import PubSubEmulator

INGEST_GOAL_RATIO = 0.8
ENGINES = ("sqlite", "postgresql")
WAIT_TIMEOUT_S = 600.0
REPLICA_START_TIMEOUT_S = 300.0
REPLICA_DONE_POLL_S = 0.05


def telemetry(device: int, seq: int, when: datetime, version: str = "1.0.0",
              event: str | None = None) -> TelemetryMessage:
    """One realistic `inference` (or event) message of simulated device `device`."""
    latency = 4.0 + (seq % 7) * 0.5 + device % 3
    return TelemetryMessage(
        device_id=f"cam-{device:04d}", seq=seq, time=when, kind="event" if event else "inference",
        model=ModelRef(name="mobilenet", version=version, variant="edgetpu", backend="edgetpu:usb:0"),
        inference=None if event else InferenceSummary(
            count=1, latency_ms_p50=latency, latency_ms_p95=latency, latency_ms_max=latency, fps=30.0,
            window_s=0.0, top=[ResultItem(id=3, label="tabby cat", score=0.87)]),
        health=Health(cpu_temp_c=48.5, uptime_s=1000.0 + seq, mem_total_mb=1024.0, mem_available_mb=512.0,
                      load_1m=0.4, tpu_present=True, spool_depth=0, spool_dropped=0),
        event=Event(kind=event, detail="1.0.0 -> 1.1.0", model_version=version) if event else None)


def publish(publisher, topic: str, devices: int, first_seq: int, per_device: int) -> int:
    """Publishes per_device messages for each device (seqs first_seq...); returns how many."""
    now = datetime.now(UTC)
    futures = []
    for seq in range(first_seq, first_seq + per_device):
        for device in range(devices):
            message = telemetry(device, seq, now)
            futures.append(publisher.publish(topic, message.to_json_bytes(), **message.attributes()))
    for future in futures:
        future.result(timeout=WAIT_TIMEOUT_S)
    return len(futures)


def raw_pull_rate(subscription: str, expected: int, max_messages: int) -> float:
    """Messages/s of a streaming pull whose callback only acks, until `expected` were received."""
    from google.cloud import pubsub_v1

    subscriber = pubsub_v1.SubscriberClient()  # its own, closed after, like the monitor's

    received = 0
    lock = threading.Lock()
    done = threading.Event()

    def callback(message) -> None:
        nonlocal received
        message.ack()
        with lock:
            received += 1
            if received >= expected:
                done.set()

    start = time.perf_counter()
    stream = subscriber.subscribe(subscription, callback=callback,
                                  flow_control=pubsub_v1.types.FlowControl(max_messages=max_messages))
    finished = done.wait(WAIT_TIMEOUT_S)
    elapsed = time.perf_counter() - start
    stream.cancel()
    stream.result(timeout=60)
    subscriber.close()
    if not finished:
        raise RuntimeError(f"raw pull got {received} of {expected} messages in {WAIT_TIMEOUT_S:.0f} s")
    return expected / elapsed


def monitor_rate(config, expected: int) -> tuple[float, object]:
    """Messages/s of one `run_monitor` until `expected` messages were committed and acked."""
    from edgefleet.monitor.service import run_monitor

    stop = threading.Event()
    done = threading.Event()
    taken = 0
    result: list[object] = []

    def on_batch(outcomes) -> None:
        nonlocal taken
        taken += len(outcomes)
        if taken >= expected:
            done.set()

    start = time.perf_counter()
    thread = threading.Thread(target=lambda: result.append(run_monitor(config, stop, on_batch=on_batch)))
    thread.start()
    finished = done.wait(WAIT_TIMEOUT_S)
    elapsed = time.perf_counter() - start
    stop.set()
    thread.join(timeout=120)
    if not finished:
        raise RuntimeError(f"the monitor took {taken} of {expected} messages in {WAIT_TIMEOUT_S:.0f} s")
    return expected / elapsed, result[0] if result else None


def _replica(config_json: str, ready, go, stop, taken) -> None:  # noqa: ANN001 - multiprocessing objects
    """One monitor process of the replica measurement: ready, waits for `go`, adds what it takes to `taken`."""
    from edgefleet.monitor.config import MonitorConfig
    from edgefleet.monitor.service import run_monitor

    config = MonitorConfig.model_validate_json(config_json)

    def on_batch(outcomes) -> None:
        with taken.get_lock():
            taken.value += len(outcomes)

    ready.release()
    go.wait()
    run_monitor(config, stop, on_batch=on_batch)


def replicas_rate(config, replicas: int, expected: int) -> float:
    """Messages/s of `replicas` monitor processes on one subscription and store until they took `expected`."""
    context = multiprocessing.get_context("spawn")
    ready, go, stop, taken = context.Semaphore(0), context.Event(), context.Event(), context.Value("q", 0)
    processes = [context.Process(target=_replica, args=(config.model_dump_json(), ready, go, stop, taken))
                 for _ in range(replicas)]
    for process in processes:
        process.start()
    try:
        for _ in processes:
            if not ready.acquire(timeout=REPLICA_START_TIMEOUT_S):
                raise RuntimeError(f"a monitor replica was not ready in {REPLICA_START_TIMEOUT_S:.0f} s")
        start = time.perf_counter()
        go.set()
        deadline = start + WAIT_TIMEOUT_S
        while taken.value < expected:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{replicas} monitor(s) took {taken.value} of {expected} messages in "
                                   f"{WAIT_TIMEOUT_S:.0f} s")
            time.sleep(REPLICA_DONE_POLL_S)
        return expected / (time.perf_counter() - start)
    finally:
        stop.set()
        go.set()
        for process in processes:
            process.join(120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000, help="messages per ingest measurement")
    parser.add_argument("--devices", type=int, default=100, help="simulated devices publishing")
    parser.add_argument("--status-devices", type=int, default=None,
                        help="one fleet size for the fleet_status test (instead of --sizes)")
    parser.add_argument("--skip-ingest", action="store_true", help="only the fleet_status measurements")
    parser.add_argument("--replicas", type=int, default=2,
                        help="monitor processes on one PostgreSQL store measured against one (0: skip)")
    parser.add_argument("--keys-only", action="store_true", help="only the device key read measurements")
    status_bench.add_arguments(parser)
    key_refresh_bench.add_arguments(parser)
    args = parser.parse_args()
    if args.status_devices is not None:
        args.sizes = str(args.status_devices)
    per_device = max(1, args.messages // args.devices)
    console = Console(width=max(Console().width, 110))

    if not args.keys_only:
        if not args.skip_ingest:
            _ingest(args, per_device, console)
        status_bench.main_from(args, console)
    key_refresh_bench.main_from(args, console)


def _engines(text: str) -> tuple[str, ...]:
    engines = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown or not engines:
        raise SystemExit(f"--engines {text!r}: name some of {', '.join(ENGINES)}")
    return engines


def _ingest(args: argparse.Namespace, per_device: int, console: Console) -> None:
    from edgefleet.monitor.config import IngestConfig, MonitorConfig

    ingest = IngestConfig()
    engines = _engines(args.engines)
    with tempfile.TemporaryDirectory() as scratch, PubSubEmulator(log_path=Path(scratch) / "emulator.log") as emu:
        os.environ["PUBSUB_EMULATOR_HOST"] = emu.host
        from google.cloud import pubsub_v1

        publisher = pubsub_v1.PublisherClient()
        subscriber = pubsub_v1.SubscriberClient()
        topic = publisher.create_topic(name=publisher.topic_path(emu.project, "bench-telemetry")).name
        replica_runs = (1, args.replicas) if args.replicas and "postgresql" in engines else ()
        names = ("bench-raw-pull", *(f"bench-fleet-monitor-{engine}" for engine in engines),
                 *(f"bench-replicas-{index}x{count}" for index, count in enumerate(replica_runs)))
        raw_subscription, *subscriptions = (
            subscriber.create_subscription(name=subscriber.subscription_path(emu.project, name), topic=topic).name
            for name in names)
        monitor_subscriptions, replica_subscriptions = subscriptions[:len(engines)], subscriptions[len(engines):]

        console.print(f"publishing {per_device * args.devices} messages from {args.devices} devices ...")
        expected = publish(publisher, topic, args.devices, 1, per_device)
        raw = raw_pull_rate(raw_subscription, expected, ingest.flow_control_max_messages)
        console.print(f"raw streaming pull: {raw:,.0f} msg/s")
        rates = {}
        with status_bench.postgres_databases(None) as new_database:
            for engine, subscription in zip(engines, monitor_subscriptions, strict=True):
                # The simulated devices do not sign: the signature check is not what this measures.
                config = MonitorConfig(project=emu.project, subscription=subscription.rsplit("/", 1)[-1],
                                       store_path=Path(scratch) / "fleet.sqlite", identity={"mode": "transition"},
                                       store={"url": new_database() if engine == "postgresql" else None})
                rates[engine], report = monitor_rate(config, expected)
                console.print(f"monitor on {engine}: {rates[engine]:,.0f} msg/s ({report})")
            replica_rates = {}
            for count, subscription in zip(replica_runs, replica_subscriptions, strict=True):
                config = MonitorConfig(project=emu.project, subscription=subscription.rsplit("/", 1)[-1],
                                       store_path=Path(scratch) / "unused.sqlite", identity={"mode": "transition"},
                                       store={"url": new_database()})
                replica_rates[count] = replicas_rate(config, count, expected)
                console.print(f"{count} monitor process(es) on postgresql: {replica_rates[count]:,.0f} msg/s")
        subscriber.close()

    table = Table(title="fleet monitor benchmark")
    for column in ("measure", "value", "reference", "ratio", "goal", "met"):
        table.add_column(column)
    for engine, rate in rates.items():
        ratio = rate / raw
        table.add_row(f"monitor ingest, {engine} store (msg/s)", f"{rate:,.0f}", f"raw streaming pull {raw:,.0f}",
                      f"{ratio:.2f}x", f">= {INGEST_GOAL_RATIO}x", "yes" if ratio >= INGEST_GOAL_RATIO else "NO")
    if len(replica_rates) == 2:
        one, many = replica_rates[1], replica_rates[args.replicas]
        table.add_row(f"monitor ingest, {args.replicas} processes on one postgresql store (msg/s)", f"{many:,.0f}",
                      f"1 process {one:,.0f}", f"{many / one:.2f}x", "(measured)", "-")
    console.print(table)


if __name__ == "__main__":
    main()
