"""Who is in a staged rollout: the stable hash of (rollout id, device id) against the share in basis points."""

from __future__ import annotations

import hashlib
import math

from hypothesis import given
from hypothesis import strategies as st

from edgefleet.kernel.contracts.rollout import SHARE_BP_FULL, cohort_bucket, in_share, percent_to_bp

FLEET = [f"cam-{index:05d}" for index in range(10_000)]
ids = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,40}", fullmatch=True)
shares = st.integers(min_value=0, max_value=SHARE_BP_FULL)


def test_bucket_is_the_first_8_bytes_of_sha256_mod_10000() -> None:
    digest = hashlib.sha256(b"birds-1.1.0:cam-00001").digest()
    assert cohort_bucket("birds-1.1.0", "cam-00001") == int.from_bytes(digest[:8], "big") % 10_000


@given(rollout=ids, device=ids, low=shares, high=shares)
def test_raising_the_share_only_adds_devices(rollout: str, device: str, low: int, high: int) -> None:
    low, high = sorted((low, high))
    assert not in_share(rollout, device, low) or in_share(rollout, device, high)


@given(rollout=ids, device=ids)
def test_nobody_at_zero_everybody_at_full(rollout: str, device: str) -> None:
    assert not in_share(rollout, device, 0)
    assert in_share(rollout, device, SHARE_BP_FULL)


def test_the_share_is_fair_on_10000_devices() -> None:
    for share_bp in (100, 1_000, 5_000, 9_000):
        count = sum(in_share("birds-1.1.0", device, share_bp) for device in FLEET)
        expected = len(FLEET) * share_bp / SHARE_BP_FULL
        sigma = math.sqrt(expected * (1 - share_bp / SHARE_BP_FULL))
        assert abs(count - expected) <= 5 * sigma, (share_bp, count, expected)


def test_another_rollout_picks_other_devices() -> None:
    first = {device for device in FLEET if in_share("birds-1.1.0", device, 1_000)}
    second = {device for device in FLEET if in_share("birds-1.2.0", device, 1_000)}
    assert len(first & second) < len(first) / 4  # about 10 % of 10 %, not the same canaries every time


def test_percent_to_basis_points() -> None:
    assert [percent_to_bp(p) for p in (1, 12.5, 100, 0.01)] == [100, 1250, 10_000, 1]
