"""Device key reads of the fleet monitor at fleet scale (issue 23): message-path latency during a key reload, and
reload times, before (every record read serially, on the message that found the keys due) and after (background
refresh; only the records whose listing generation changed are read, `read_workers` at a time).

Run alone: `python -m bench.key_refresh_bench [--devices 10000] [--read-ms 20] [--baseline-devices 300]`
(`python -m bench.monitor_bench --keys-only` runs only this; `python -m bench.monitor_bench` runs it last).

The registry is a STAND-IN: a local registry directory of real signed records (`fleet/devices/<id>.json`, one
fleet enrolment key), read through `SlowRegistry`, which sleeps `--read-ms` before each record read (a GCS GET
is 20-60 ms; the real reader makes two requests per record, a metadata read then the download, so 20 ms is the
low end) and `--read-ms` per listing page of 1,000 objects (GCS pages listings by 1,000 and gives each object's
generation in the listing, as the stand-in does). The local directory alone reads for free, which is why the
other benchmarks never showed the problem.

Measured:
- before: one reload as the old monitor made it (serial, every record), timed at `--baseline-devices` and
  scaled linearly to `--devices` (the serial reload is a sum of equal reads; running it at 10,000 takes minutes);
  the message that found the keys due waited that long, and every other message waited behind the lock.
- after: the start's full read (`load_now`) at `--devices`; a background refresh with nothing changed, and with
  `--changed` records re-enrolled; the first message after the start (it re-reads the keys once, as it always
  did: a listing and the records enrolled since the start); message-path latency (`TelemetryVerifier.check` of
  signed messages, one thread sending in a loop) while a background refresh re-reads every record, against the
  same with no refresh running.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.console import Console
from rich.table import Table

from edgefleet.device.registry.local import LocalRegistryReader
from edgefleet.device.trust.device_identity import public_key_text, sign_telemetry
from edgefleet.kernel.contracts.devicekey import DEVICE_KEY_SCHEMA_V1, DeviceKeyRecord, sign_record
from edgefleet.kernel.trust.signatures import generate_keypair, key_id
from edgefleet.monitor.device_key_reader import KEY_READ_WORKERS, FleetKeyReader, KeyRecordPolicy
from edgefleet.monitor.telemetry_verifier import TelemetryVerifier

LISTING_PAGE = 1_000  # objects per GCS listing page
SENDER_DEVICES = 50  # devices whose signed messages the message-path measurement sends
MS = 1000.0
IDLE_S = 2.0  # how long messages are checked with no refresh running


class SlowRegistry(LocalRegistryReader):
    """A local registry read with GCS's latency: `read_s` per record read and per listing page of 1,000; the
    listing carries a tag per object (GCS: the generation; here the file's inode, size and times)."""

    def __init__(self, root: Path, read_s: float) -> None:
        super().__init__(root)
        self.read_s, self.reads = read_s, 0
        self._count = threading.Lock()

    def _list_tagged(self, prefix: str) -> dict[str, str | None]:
        keys = self._list_keys(prefix)
        time.sleep(self.read_s * (len(keys) // LISTING_PAGE + 1))
        tags = {}
        for key in keys:
            stat = (self.root / key).stat()
            tags[key] = f"{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}"
        return tags

    def _read_bounded(self, key: str, max_bytes: int) -> bytes | None:
        with self._count:
            self.reads += 1
        time.sleep(self.read_s)
        return super()._read_bounded(key, max_bytes)


def write_fleet(root: Path, devices: int, enrolment: Ed25519PrivateKey) -> dict[str, Ed25519PrivateKey]:
    """`devices` signed device key records under `root`; the device keys of the last SENDER_DEVICES."""
    senders = {}
    for number in range(devices):
        device_id = f"cam-{number:05d}"
        key = generate_keypair()[0]
        if number >= devices - SENDER_DEVICES:
            senders[device_id] = key
        write_record(root, device_id, key, enrolment)
    return senders


def write_record(root: Path, device_id: str, key: Ed25519PrivateKey, enrolment: Ed25519PrivateKey) -> None:
    public = key.public_key()
    draft = DeviceKeyRecord(schema=DEVICE_KEY_SCHEMA_V1, device_id=device_id, public_key=public_key_text(public),
                            key_id=key_id(public), added_by="bench")
    path = root / "fleet" / "devices" / f"{device_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(sign_record(enrolment, draft).model_dump_json(by_alias=True))


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def message_latencies(verifier: TelemetryVerifier, senders: dict[str, Ed25519PrivateKey],
                      until: Callable[[], bool]) -> list[float]:
    """Seconds per `check` of signed messages from `senders`, sent in a loop until `until()`."""
    from bench.monitor_bench import telemetry

    signed = []
    for device_id, key in senders.items():
        message = telemetry(0, 1, datetime.now(UTC)).model_copy(update={"device_id": device_id})
        data = message.to_json_bytes()
        signed.append((data, {"device_id": device_id, **sign_telemetry(key, data, device_id, 1)}))
    latencies: list[float] = []
    while not until() or not latencies:
        data, attributes = signed[len(latencies) % len(signed)]
        started = time.perf_counter()
        verdict = verifier.check(data, attributes)
        latencies.append(time.perf_counter() - started)
        assert verdict.verified, verdict.problem
    return latencies


def during_background_refresh(registry: SlowRegistry, policy: KeyRecordPolicy,
                              senders: dict[str, Ed25519PrivateKey], workers: int) -> tuple[list[float], float]:
    """Message latencies while one background refresh re-reads every record (a new reader: nothing kept, the
    worst case), and that refresh's duration."""
    reader = [FleetKeyReader(registry, policy, read_workers=workers)]
    verifier = TelemetryVerifier(lambda: reader[0](), refresh_s=3600.0)
    verifier.load_now()
    verifier.start_refreshing()  # the timed refresh below runs off the message path, as the refresher's do
    message_latencies(verifier, senders, lambda: True)  # the first message's re-read after the start, done
    done = threading.Event()
    took: list[float] = []

    def refresh() -> None:
        reader[0] = FleetKeyReader(registry, policy, read_workers=workers)  # nothing kept: every record read
        took.append(timed(verifier.refresh))
        done.set()

    thread = threading.Thread(target=refresh)
    thread.start()
    latencies = message_latencies(verifier, senders, done.is_set)
    thread.join()
    verifier.stop_refreshing()
    return latencies, took[0]


def run(devices: int, read_ms: float, baseline_devices: int, changed: int, workers: int) -> list[tuple[str, ...]]:
    read_s = read_ms / MS
    enrolment = generate_keypair()[0]
    policy = KeyRecordPolicy({key_id(enrolment.public_key()): enrolment.public_key()})
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        small, large = Path(scratch) / "small", Path(scratch) / "large"
        write_fleet(small, baseline_devices, enrolment)
        senders = write_fleet(large, devices, enrolment)
        before = timed(FleetKeyReader(SlowRegistry(small, read_s), policy, read_workers=1))
        scaled = before * devices / baseline_devices
        rows.append((f"before: one reload, serial, {baseline_devices:,} records", f"{before:.2f} s",
                     f"scaled to {devices:,}: ~{scaled:,.0f} s, on the message path, every refresh_s"))

        registry = SlowRegistry(large, read_s)
        reader = FleetKeyReader(registry, policy, read_workers=workers)
        start = timed(reader)
        rows.append((f"after: start (load_now), every record, {workers} at a time", f"{start:.1f} s",
                     f"{registry.reads:,} record reads; before the stream is opened"))
        registry.reads = 0
        same = timed(reader)
        rows.append(("after: background refresh, nothing changed", f"{same * MS:.0f} ms",
                     f"{registry.reads} record reads (listing only)"))
        for number in range(changed):
            write_record(large, f"cam-{number:05d}", generate_keypair()[0], enrolment)
        registry.reads = 0
        some = timed(reader)
        rows.append((f"after: background refresh, {changed} records changed", f"{some * MS:.0f} ms",
                     f"{registry.reads} record reads"))

        senders = {device_id: key for device_id, key in senders.items() if int(device_id[4:]) >= changed}
        assert senders, "--changed re-enrolled every sending device: ask for more --key-devices"
        verifier = TelemetryVerifier(FleetKeyReader(registry, policy, read_workers=workers), refresh_s=3600.0)
        verifier.load_now()
        verifier.start_refreshing()
        [first] = message_latencies(verifier, senders, lambda: True)
        rows.append(("after: the first message after the start", f"{first * MS:.0f} ms",
                     "re-reads the keys once, as before (a listing: the devices enrolled since the start)"))
        idle_deadline = time.monotonic() + IDLE_S
        idle = message_latencies(verifier, senders, lambda: time.monotonic() >= idle_deadline)
        verifier.stop_refreshing()
        busy, refresh_s = during_background_refresh(registry, policy, senders, workers)
        rows.append(("after: message check, no refresh running", _latency(idle), f"{len(idle):,} messages"))
        rows.append((f"after: message check during a full background re-read ({refresh_s:.1f} s)", _latency(busy),
                     f"{len(busy):,} messages answered meanwhile (before: 0, all waited ~{scaled:,.0f} s)"))
    return rows


def _latency(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {statistics.median(ordered) * MS:.2f} ms, p99 {p99 * MS:.2f} ms, max {ordered[-1] * MS:.1f} ms"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key-devices", type=int, default=10_000, help="device key records (the fleet)")
    parser.add_argument("--read-ms", type=float, default=20.0, help="stand-in latency per record read")
    parser.add_argument("--baseline-devices", type=int, default=300, help="records read serially for 'before'")
    parser.add_argument("--changed", type=int, default=100, help="records re-enrolled between two refreshes")
    parser.add_argument("--read-workers", type=int, default=KEY_READ_WORKERS, help="records read at once")


def main_from(args: argparse.Namespace, console: Console) -> None:
    console.print(f"device key reads: {args.key_devices:,} records, {args.read_ms:g} ms per read (stand-in) ...")
    table = Table(title=f"device key reads, {args.key_devices:,} devices, stand-in registry at "
                        f"{args.read_ms:g} ms per read")
    for column in ("measure", "value", "note"):
        table.add_column(column)
    for row in run(args.key_devices, args.read_ms, args.baseline_devices, args.changed, args.read_workers):
        table.add_row(*row)
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    main_from(parser.parse_args(), Console(width=max(Console().width, 110)))


if __name__ == "__main__":
    main()
