"""The channel pointer contract: schema 2 (signed) round-trips byte-exactly, schema 1 is still read, and the
device's acceptance rule (pure) in its corner cases."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from edgefleet.device.trust.pointers import ChannelRecord, accepted, judge_pointer, verify_pointer
from edgefleet.flows.trust.pointer_signing import next_counter, sign_pointer
from edgefleet.kernel.contracts.manifest import ChannelPointer
from tests.device.store_fixtures import Keys

SHA = "ab" * 32
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


def signed(
    keys: Keys, version: str = "1.0.0", *, previous: ChannelPointer | None = None, **kw: object
) -> ChannelPointer:
    return sign_pointer(
        keys.private, model="birds", channel="stable", version=version, manifest_sha256=SHA, previous=previous,
        now=NOW, **kw,
    )


def test_signed_pointer_verifies_after_a_json_round_trip(keys: Keys) -> None:
    pointer = signed(keys, updated_by="release-model")
    again = ChannelPointer.model_validate_json(pointer.to_json_bytes())
    assert again == pointer and again.signed_bytes() == pointer.signed_bytes()
    verify_pointer(keys.public, again, source="test")


def test_schema_1_is_read_and_cannot_carry_schema_2_fields() -> None:
    v1 = ChannelPointer.model_validate_json(
        b'{"schema": "edgefleet.channel/1", "model": "birds", "channel": "stable", "version": "1.0.0",'
        b' "manifest_sha256": "' + SHA.encode() + b'", "updated_at": "2026-01-01T00:00:00Z"}'
    )
    assert not v1.signed
    with pytest.raises(ValidationError, match="need schema"):
        ChannelPointer(model="birds", channel="stable", version="1.0.0", manifest_sha256=SHA, downgrade=True)
    with pytest.raises(ValidationError, match="needs"):
        ChannelPointer.model_validate(v1.model_dump(by_alias=True) | {"schema": "edgefleet.channel/2"})


def test_pointer_names_are_full_matches() -> None:
    with pytest.raises(ValidationError):
        ChannelPointer(model="birds", channel="stable", version="1.0.0\n", manifest_sha256=SHA)


def test_counter_goes_up_even_when_the_channel_is_recreated(keys: Keys) -> None:
    first = signed(keys)
    assert next_counter(first, NOW) == first.counter + 1
    assert next_counter(None, NOW + timedelta(seconds=1)) > first.counter


def test_same_counter_with_other_content_is_refused(keys: Keys) -> None:
    pointer = signed(keys)
    record = accepted(ChannelRecord(), pointer)
    assert judge_pointer(pointer, record, floor=None, now=NOW).verdict == "accept"
    twin = signed(keys, "1.2.0").model_copy(update={"counter": pointer.counter})
    assert judge_pointer(twin, record, floor=None, now=NOW).verdict == "refuse"


def test_downgrade_resets_the_floor(keys: Keys) -> None:
    high = signed(keys, "2.0.0")
    record = accepted(ChannelRecord(), high)
    down = signed(keys, "1.0.0", previous=high, downgrade=True)
    assert judge_pointer(down, record, floor=None, now=NOW).verdict == "accept"
    assert accepted(record, down).highest_version == "1.0.0"
