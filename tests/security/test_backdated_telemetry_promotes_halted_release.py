"""Issue 20, item 1: the monitor kept the device's own timestamps. A stolen canary device (its own key, so its
messages verify) backdated two messages by two hours and made `promote-canary` sign `stable` for a release the
canary had halted: its first message of the version made it seem to have run for the whole `healthy_for_s`,
and its rollback fell before the health window.

Every time the monitor keeps is now its receive time. The promotion's own decision (`promotion_blocker`, the
promote-canary flow's check) reads a real fleet state written by the monitor's real batch path from messages
signed by the device's own key (real registry, real spool signer)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from edgefleet.device.trust.device_identity import sign_telemetry
from edgefleet.flows.registry import LocalRegistryWriter
from edgefleet.flows.rollout.params import CanaryGate, PromotionParams
from edgefleet.flows.rollout.promote import promotion_blocker
from edgefleet.kernel.contracts.telemetry import Event, Health, InferenceSummary, ModelRef, TelemetryMessage
from edgefleet.monitor import version_health
from edgefleet.monitor.batch import process_batch
from edgefleet.monitor.ingest import Status
from edgefleet.monitor.store import open_store
from edgefleet.monitor.telemetry_verifier import TelemetryVerifier
from edgefleet.monitor.windows import version_window
from tests.security.test_forged_telemetry import Device, fleet_keys
from tests.security.test_one_message_stops_the_monitor import FakeMessage


@pytest.fixture
def registry(tmp_path: Path) -> LocalRegistryWriter:
    return LocalRegistryWriter(tmp_path / "registry", create=True)


NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
CLOCK_BEHIND = timedelta(hours=2)
HEALTHY_FOR_S = 3600.0
MODEL = ModelRef(name="mobilenet", version="2.0.0", variant="cpu", backend="cpu")


def message(seq: int, claimed: datetime, *, rollback: bool = False) -> TelemetryMessage:
    if rollback:  # the canary's verdict: 2.0.0 rolled back (the wave halted)
        return TelemetryMessage(device_id="cam-1", seq=seq, time=claimed, kind="event", model=MODEL,
                                health=Health(uptime_s=seq),
                                event=Event(kind="rollback", model_version="1.0.0", from_version="2.0.0"))
    return TelemetryMessage(device_id="cam-1", seq=seq, time=claimed, kind="summary", model=MODEL,
                            inference=InferenceSummary(count=100, latency_ms_p50=5.0, latency_ms_p95=6.0,
                                                       latency_ms_max=7.0, fps=10.0, window_s=10.0),
                            health=Health(uptime_s=seq))


def test_backdated_telemetry_does_not_promote_a_halted_release(tmp_path: Path, registry: LocalRegistryWriter):
    cam = Device(tmp_path / "cam-1", "cam-1", registry)
    verifier = TelemetryVerifier(lambda: fleet_keys(registry), refresh_s=0.0)
    store_path = tmp_path / "fleet.sqlite"
    monitor_config = tmp_path / "monitor.yaml"
    monitor_config.write_text(yaml.safe_dump({"store_path": str(store_path), "count_bucket_s": 60.0,
                                              "identity": {"registry": str(registry.root)}}))
    # Ten minutes of real time: the first summary of 2.0.0 and the rollback of 2.0.0 stamped two hours
    # earlier by the device, then healthy-looking summaries of 2.0.0 stamped honestly.
    with open_store(store_path, latency_window=120, count_bucket_s=60.0) as store:
        for seq in range(1, 61):
            received = NOW - timedelta(seconds=600 - seq * 10)
            claimed = received - CLOCK_BEHIND if seq <= 2 else received
            data = message(seq, claimed, rollback=seq == 2).to_json_bytes()
            signed = FakeMessage(data, f"m{seq}", {"device_id": "cam-1", **sign_telemetry(cam.key, data, "cam-1", 1)})
            assert process_batch(store, [signed], received.timestamp(), verifier)[0].status is Status.APPLIED
        health = version_health(store, ["cam-1"], "mobilenet", "2.0.0", NOW - timedelta(seconds=HEALTHY_FOR_S))
        # the canary judge's window (the path beside): every count where it was received, none before
        window = version_window(store, ["cam-1"], "mobilenet", "2.0.0", NOW - timedelta(seconds=600))
        earlier = version_window(store, ["cam-1"], "mobilenet", "2.0.0", NOW - CLOCK_BEHIND - timedelta(hours=1),
                                 NOW - timedelta(seconds=660))
    params = PromotionParams(inventory="unused.yaml", registry=str(registry.root), model="mobilenet",
                             monitor_config=str(monitor_config), healthy_for_s=HEALTHY_FOR_S,
                             judge=CanaryGate(min_promotion_inferences=100))
    blocker = promotion_blocker(params, "2.0.0", ["cam-1"], NOW)
    assert blocker is not None, "promote-canary would sign stable for the halted 2.0.0"
    assert "has run 2.0.0 for 59" in blocker  # first received 590 s ago, not 2 h 10 min
    assert health.rollbacks == 1  # counted when it was received, inside the window
    assert (window.inferences, window.rollbacks, earlier.inferences) == (59 * 100, 1, 0)
