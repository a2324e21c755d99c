"""A spot-check sample signed by the device's identity key: the signature survives the record's JSON round trip
(the operator re-derives the signed bytes from the parsed record) and covers every field, the JPEG's hash too."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone

import pytest

from edgefleet.device.trust.device_identity import sign_spot_sample, spot_sample_signature_problem
from edgefleet.kernel.contracts.spotcheck import SpotSample
from edgefleet.kernel.trust.signatures import generate_keypair

FRAME = "20261207T210000Z-000000000007"
KEY, PUBLIC = generate_keypair()


def spot_sample(device: str, frame: str, image: bytes) -> SpotSample:  # device tests import no flows (Python 3.9)
    return SpotSample(device_id=device, frame_id=frame, captured_at=datetime(2026, 12, 7, 21, tzinfo=timezone.utc),
                      model="birds", model_version="1.0.0", answer_id=3, answer_label="robin", answer_score=0.9,
                      share=0.01, image_sha256=hashlib.sha256(image).hexdigest())


def test_a_signed_sample_verifies_after_its_json_round_trip() -> None:
    signed = sign_spot_sample(KEY, spot_sample("cam-1", FRAME, b"jpeg").model_copy(update={"answer_score": 0.1 + 0.2}))
    parsed = SpotSample.model_validate_json(signed.model_dump_json(by_alias=True))
    assert parsed.signature == signed.signature and spot_sample_signature_problem(PUBLIC, parsed) is None


@pytest.mark.parametrize(("field", "value"), [("device_id", "cam-2"), ("frame_id", "20261207T210000Z-000000000008"),
                                              ("image_sha256", "0" * 64), ("answer_label", "crow")])
def test_any_field_changed_after_signing_breaks_the_signature(field: str, value: object) -> None:
    changed = sign_spot_sample(KEY, spot_sample("cam-1", FRAME, b"jpeg")).model_copy(update={field: value})
    assert spot_sample_signature_problem(PUBLIC, changed) == (
        f"sample {changed.frame_id} is not signed by the key of device {changed.device_id}")


def test_another_key_and_no_signature_are_named() -> None:
    sample = spot_sample("cam-1", FRAME, b"jpeg")
    assert spot_sample_signature_problem(PUBLIC, sample) == f"sample {FRAME} of cam-1 is not signed"
    other = sign_spot_sample(generate_keypair()[0], sample)
    assert "not signed by the key of device cam-1" in (spot_sample_signature_problem(PUBLIC, other) or "")
