"""The spot check in the agent: the inference side never waits; samples reach the bucket, create-only, under the
device's prefix, with the model's answer; a failing upload backs off and keeps them."""

from __future__ import annotations

import functools
import hashlib
import threading
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgefleet.device.registry.base import RegistryReader
from edgefleet.device.registry.gcs import GcsRegistryReader
from edgefleet.device.registry.local import LocalRegistryReader
from edgefleet.device.runtime.engine import ResultItem
from edgefleet.device.spotcheck.config import SpotCheckConfig
from edgefleet.device.spotcheck.runner import SpotChecker
from edgefleet.device.trust.device_identity import sign_spot_sample, spot_sample_signature_problem
from edgefleet.kernel.contracts.spotcheck import SpotSample, sample_keys
from edgefleet.kernel.errors import RegistryError
from edgefleet.kernel.trust.signatures import generate_keypair

RUN = datetime(2026, 12, 7, 21, 0, tzinfo=timezone.utc)
ANSWER = (ResultItem(id=3, label="robin", score=0.82), ResultItem(id=1, label="crow", score=0.1))
DEVICE_KEY, DEVICE_PUBLIC_KEY = generate_keypair()
SIGN = functools.partial(sign_spot_sample, DEVICE_KEY)


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)


def _checker(tmp_path: Path, registry: RegistryReader | None = None, **settings: object) -> SpotChecker:
    config = SpotCheckConfig.model_validate({"enabled": True, "share": 1.0, **settings})
    target = registry or LocalRegistryReader(tmp_path / "registry")

    def open_registry() -> RegistryReader:
        return target

    return SpotChecker(config, "cam-1", tmp_path / "agent", open_registry, sign=SIGN, run_started=RUN)


def test_a_full_queue_leaves_frames_out_counted_and_the_inference_side_never_waits(tmp_path: Path) -> None:
    """The spot-check thread is stuck opening the registry: the inference side still hands over every frame
    at once (a put_nowait), the ones beyond the queue counted as not sent."""
    entered, release = threading.Event(), threading.Event()

    def stuck_registry() -> RegistryReader:
        entered.set()
        release.wait()
        raise RegistryError("unreachable", "never mind")

    config = SpotCheckConfig(enabled=True, share=1.0, queue=2, max_per_hour=1000, max_per_day=1000)
    checker = SpotChecker(config, "cam-1", tmp_path / "agent", stuck_registry, sign=SIGN, run_started=RUN)
    stop = threading.Event()
    thread = threading.Thread(target=checker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert entered.wait(60), "the spot-check thread never tried to upload"
        for seed in range(100):  # returns although the other thread is stuck: nothing on this side waits
            checker.offer(_image(seed), ANSWER, "birds", "1.0.0")
        assert checker.sampled == 100 and checker.queue_full == 98 and checker.not_sent == 98
    finally:
        release.set()
        stop.set()
        thread.join(60)
    assert not thread.is_alive()
    assert len(checker.outbox) == 2  # the two queued frames were stored on the way out


def test_sampled_frames_reach_the_registry_with_the_models_answer(tmp_path: Path) -> None:
    checker = _checker(tmp_path)
    images = [_image(seed) for seed in range(3)]
    for image in images:
        checker.offer(image, ANSWER, "birds", "1.0.0")
    checker.offer(_image(9), (), "birds", "1.0.0")  # no result above the threshold: sent too, with no answer
    checker.store_queued()
    assert checker.upload_due() == checker.config.upload_interval_s
    assert checker.stats().uploaded == 4 and len(checker.outbox) == 0
    root = tmp_path / "registry"
    jpeg_key, json_key = sample_keys("cam-1", "20261207T210000Z-000000000001")
    sample = SpotSample.model_validate_json((root / json_key).read_bytes())
    assert (sample.answer_id, sample.answer_label, sample.answer_score) == (3, "robin", pytest.approx(0.82))
    assert (sample.model, sample.model_version, sample.device_id, sample.share) == ("birds", "1.0.0", "cam-1", 1.0)
    assert sample.signature is not None and spot_sample_signature_problem(DEVICE_PUBLIC_KEY, sample) is None
    jpeg = (root / jpeg_key).read_bytes()
    assert hashlib.sha256(jpeg).hexdigest() == sample.image_sha256
    decoded = np.asarray(Image.open(root / jpeg_key))
    assert decoded.shape == images[1].shape
    empty = SpotSample.model_validate_json((root / sample_keys("cam-1", "20261207T210000Z-000000000003")[1])
                                           .read_bytes())
    assert empty.answer_id is None and empty.answer_label == ""
    assert sorted(p.name for p in (root / "spotcheck").iterdir()) == ["cam-1"]


def test_a_failing_upload_backs_off_keeps_the_samples_and_sends_them_later(tmp_path: Path) -> None:
    calls: list[int] = []

    def flaky() -> RegistryReader:
        calls.append(1)
        if len(calls) < 3:
            raise RegistryError("no network", "wait")
        return LocalRegistryReader(tmp_path / "registry")

    config = SpotCheckConfig(enabled=True, share=1.0, backoff_initial_s=2.0, backoff_max_s=8.0)
    checker = SpotChecker(config, "cam-1", tmp_path / "agent", flaky, sign=SIGN, run_started=RUN)
    checker.offer(_image(1), ANSWER, "birds", "1.0.0")
    checker.store_queued()
    first, second = checker.upload_due(), checker.upload_due()
    assert 2.0 * 0.8 <= first <= 2.0 and 4.0 * 0.8 <= second <= 4.0  # doubling, jittered down
    assert checker.failures == 2 and len(checker.outbox) == 1 and "no network" in (checker.last_error or "")
    assert checker.upload_due() == config.upload_interval_s
    assert checker.uploaded == 1 and checker.failures == 0 and len(checker.outbox) == 0


def test_samples_reach_the_stand_in_gcs_bucket_create_only(tmp_path: Path, gcs_client, gcs_bucket: str) -> None:
    registry = GcsRegistryReader(gcs_bucket, "registry", client=gcs_client)
    checker = _checker(tmp_path, registry)
    checker.offer(_image(1), ANSWER, "birds", "1.0.0")
    checker.store_queued()
    image, record = checker.outbox.read(checker.outbox.oldest(1)[0])
    checker.upload_due()
    names = sorted(blob.name for blob in gcs_client.list_blobs(gcs_bucket))
    jpeg_key, json_key = sample_keys("cam-1", "20261207T210000Z-000000000000")
    assert names == [f"registry/{jpeg_key}", f"registry/{json_key}"]
    blob = gcs_client.bucket(gcs_bucket).get_blob(f"registry/{jpeg_key}")
    assert blob.content_type == "image/jpeg" and blob.download_as_bytes() == image
    # a retry after a lost acknowledgement finds the objects there: nothing is replaced, nothing fails
    from edgefleet.device.spotcheck.upload import upload_sample

    upload_sample(registry, "cam-1", "20261207T210000Z-000000000000", image, record)
    assert gcs_client.bucket(gcs_bucket).get_blob(f"registry/{json_key}").download_as_bytes() == record


def test_a_sample_unreadable_in_the_outbox_is_dropped_and_the_rest_still_go(tmp_path: Path) -> None:
    checker = _checker(tmp_path)
    for seed in range(3):
        checker.offer(_image(seed), ANSWER, "birds", "1.0.0")
    checker.store_queued()
    first = checker.outbox.oldest(1)[0]
    (checker.outbox.directory / f"{first}.jpg").unlink()  # gone behind the agent's back
    assert checker.upload_due() == checker.config.upload_interval_s
    assert (checker.uploaded, checker.outbox.dropped, len(checker.outbox)) == (2, 1, 0)
    assert checker.not_sent == 1 and "unreadable" in (checker.last_error or "")
