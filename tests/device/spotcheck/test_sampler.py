"""The spot check's sampler: the share, reproducible, blind to the model's answer, capped per hour and day."""

from __future__ import annotations

import math

import pytest

from edgefleet.device.spotcheck.sampler import DAY_S, HOUR_S, RateCap, SpotSampler, in_sample, share_threshold

FRAMES = 200_000
SHARE = 0.01
NO_CAP = RateCap(per_hour=10**9, per_day=10**9)


def _taken(sampler: SpotSampler, frames: int, now_s: float = 0.0) -> list[int]:
    return [seq for seq in (sampler.take(now_s) for _ in range(frames)) if seq is not None]


def test_the_sample_is_the_share_of_the_frames_within_binomial_noise() -> None:
    taken = _taken(SpotSampler("cam-1", "run-a", SHARE, NO_CAP), FRAMES)
    expected, sd = FRAMES * SHARE, math.sqrt(FRAMES * SHARE * (1 - SHARE))
    assert abs(len(taken) - expected) < 5 * sd, len(taken)


def test_the_sample_is_reproducible_and_differs_by_device_and_run() -> None:
    first = _taken(SpotSampler("cam-1", "run-a", SHARE, NO_CAP), 20_000)
    assert first == _taken(SpotSampler("cam-1", "run-a", SHARE, NO_CAP), 20_000)
    assert first == [s for s in range(20_000) if in_sample("cam-1", "run-a", s, share_threshold(SHARE))]
    assert first != _taken(SpotSampler("cam-2", "run-a", SHARE, NO_CAP), 20_000)
    assert first != _taken(SpotSampler("cam-1", "run-b", SHARE, NO_CAP), 20_000)


def test_the_sample_is_blind_to_the_models_answer() -> None:
    """Answers that follow the frame sequence (a periodic scene, a model right on 70 % of frames in runs): the
    sampled frames' answer mix matches all frames' within binomial noise, because the sampler never sees them."""
    def answer(seq: int) -> bool:  # right on 7 frames of every 10, in a block
        return seq % 10 < 7

    taken = _taken(SpotSampler("cam-1", "run-a", SHARE, NO_CAP), FRAMES)
    right = sum(answer(s) for s in taken) / len(taken)
    assert abs(right - 0.7) < 5 * math.sqrt(0.7 * 0.3 / len(taken)), right


def test_share_one_takes_every_frame_and_a_bad_share_is_refused() -> None:
    assert _taken(SpotSampler("cam-1", "r", 1.0, NO_CAP), 1000) == list(range(1000))
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="share"):
            share_threshold(bad)


def test_the_hourly_and_daily_caps_leave_out_and_count_the_rest() -> None:
    sampler = SpotSampler("cam-1", "r", 1.0, RateCap(per_hour=3, per_day=5))
    assert _taken(sampler, 10, now_s=0.0) == [0, 1, 2]
    assert sampler.capped == 7
    assert len(_taken(sampler, 10, now_s=HOUR_S + 1)) == 2  # the next hour: the day's last two
    assert _taken(sampler, 10, now_s=2 * HOUR_S + 1) == []
    assert len(_taken(sampler, 10, now_s=DAY_S + 1)) == 3  # a new day, a new hour
    assert sampler.capped == 7 + 8 + 10 + 7
