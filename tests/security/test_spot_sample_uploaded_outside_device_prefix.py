"""Issue 25, the labelled spot check opens a write path from devices to the registry bucket. Attacks on it:
whoever can write a device's agent root (or a bug) plants a sample in the outbox that names another device, a
frame id that climbs out of the device's prefix (`../../models/...`), or a JPEG other than the one its record
hashes; the agent must upload only its own samples, created once, under `spotcheck/<its id>/`. (The bucket side:
the devices' write grant is objectCreator conditioned on `spotcheck/`, tests/infra.)"""

from __future__ import annotations

import functools
import hashlib
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from edgefleet.device.registry.base import RegistryReader
from edgefleet.device.registry.local import LocalRegistryReader
from edgefleet.device.runtime.engine import ResultItem
from edgefleet.device.spotcheck.config import SpotCheckConfig
from edgefleet.device.spotcheck.runner import SpotChecker
from edgefleet.device.spotcheck.upload import SampleRefused, upload_sample
from edgefleet.device.trust.device_identity import sign_spot_sample
from edgefleet.kernel.contracts.spotcheck import SpotSample, device_prefix, sample_keys
from edgefleet.kernel.trust.signatures import generate_keypair

RUN = datetime(2026, 12, 7, 21, 0, tzinfo=UTC)
FRAME = "20261207T210000Z-000000000042"


DEVICE_KEY = generate_keypair()[0]


def _record(device_id: str, frame: str, image: bytes, *, signed: bool = True) -> bytes:
    sample = SpotSample(device_id=device_id, frame_id=frame, captured_at=RUN, model="birds", model_version="1.0.0",
                        share=1.0, image_sha256=hashlib.sha256(image).hexdigest())
    return (sign_spot_sample(DEVICE_KEY, sample) if signed else sample).model_dump_json(by_alias=True).encode()


def _uploaded(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_a_sample_planted_in_the_outbox_for_another_device_is_refused_never_uploaded(tmp_path: Path) -> None:
    registry_root = tmp_path / "registry"

    def open_registry() -> RegistryReader:
        return LocalRegistryReader(registry_root)

    checker = SpotChecker(SpotCheckConfig(enabled=True, share=1.0), "cam-1", tmp_path / "agent", open_registry,
                          sign=functools.partial(sign_spot_sample, DEVICE_KEY), run_started=RUN)
    planted = b"\xff\xd8 someone else's frame"
    checker.outbox.add(FRAME, planted, _record("cam-2", FRAME, planted))  # names cam-2
    swapped = b"\xff\xd8 another picture"
    checker.outbox.add("20261207T210000Z-000000000043", swapped,
                       _record("cam-1", "20261207T210000Z-000000000043", b"the hashed one"))
    checker.offer(np.zeros((8, 8, 3), np.uint8), (ResultItem(1, "crow", 0.9),), "birds", "1.0.0")  # its own
    checker.store_queued()
    checker.upload_due()
    assert checker.refused == 2 and checker.uploaded == 1 and len(checker.outbox) == 0
    assert _uploaded(registry_root) == [
        "spotcheck/cam-1/20261207T210000Z-000000000000.jpg", "spotcheck/cam-1/20261207T210000Z-000000000000.json"]


@pytest.mark.parametrize("frame", ["../../models/birds/channels/stable", "20261207T210000Z-000000000042/../../x",
                                   "20261207T210000Z-000000000042.jpg"])
def test_a_frame_id_that_climbs_out_of_the_device_prefix_is_refused(tmp_path: Path, frame: str) -> None:
    image = b"\xff\xd8"
    with pytest.raises(SampleRefused, match="not a valid sample"):
        upload_sample(LocalRegistryReader(tmp_path / "registry"), "cam-1", frame, image,
                      _record("cam-1", FRAME, image))
    assert _uploaded(tmp_path / "registry") == []


@pytest.mark.parametrize("device_id", ["../models", "cam-1/../cam-2", ""])
def test_keys_are_only_ever_under_a_checked_device_prefix(device_id: str) -> None:
    with pytest.raises(ValueError, match="device id"):
        sample_keys(device_id, FRAME)
    assert all(key.startswith(device_prefix("cam-1")) for key in sample_keys("cam-1", FRAME))


def test_an_uploaded_sample_is_never_replaced(tmp_path: Path) -> None:
    registry = LocalRegistryReader(tmp_path / "registry")
    image = b"\xff\xd8 first"
    upload_sample(registry, "cam-1", FRAME, image, _record("cam-1", FRAME, image))
    other = b"\xff\xd8 second"
    upload_sample(registry, "cam-1", FRAME, other, _record("cam-1", FRAME, other))  # a replay with other bytes
    assert (tmp_path / "registry" / sample_keys("cam-1", FRAME)[0]).read_bytes() == image


def test_an_unsigned_sample_left_in_the_outbox_by_an_older_agent_is_refused_never_uploaded(tmp_path: Path) -> None:
    image = b"\xff\xd8 taken before the agent signed its samples"
    with pytest.raises(SampleRefused, match="not signed by the device key"):
        upload_sample(LocalRegistryReader(tmp_path / "registry"), "cam-1", FRAME, image,
                      _record("cam-1", FRAME, image, signed=False))
    assert _uploaded(tmp_path / "registry") == []
