"""One device's drift watch on one version, one tick at a time: the pure decisions (no I/O).

A `WatchRow` is what the store keeps per (device, model, version) (`drift_state`); `step` feeds it the
device's new telemetry windows (one per count bucket, in order) and returns the new row and the drifts that
alarmed. While the row collects its baseline it only counts blocks (the windows stay in `dist_counts`);
when it has `baseline_blocks`, `needs_fit` says so and the caller reads the windows since the row's first
bucket once and calls `fit_and_run` (the baseline, then the CUSUMs over the blocks after it).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict

from edgefleet.kernel.contracts.distributions import Distributions, build
from edgefleet.monitor.drift import Drift, DriftConfig, DriftError, advance, fit_device, start
from edgefleet.monitor.drift.blocks import split_blocks
from edgefleet.monitor.drift.device import (
    baseline_from_dict,
    baseline_to_dict,
    state_from_dict,
    state_to_dict,
)

WatchStatus = Literal["baseline", "watching", "drift", "unwatched"]
SECONDS_PER_DAY = 86_400.0


class WatchRow(BaseModel):
    """One (device, model, version)'s drift watch, as `drift_state` keeps it (JSON columns as text)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    device_id: str
    model_name: str
    model_version: str
    status: WatchStatus
    first_bucket: float
    """The first count bucket of the version on this device that the watch read (the baseline starts there)."""
    blocks: int
    """Blocks seen (baseline and after)."""
    baseline: str | None = None
    cusum: str | None = None
    carry: str | None = None
    """The windows not yet making a full block, merged (JSON of `Distributions`)."""
    statistic: str | None = None
    direction: str | None = None
    effect_sd: float | None = None
    effect: float | None = None
    drift_time: float | None = None
    score_counts: str | None = None
    """The top-1 score histogram since the watch started (or since its last drift): the accuracy estimate's."""
    note: str | None = None
    updated: float


def distributions(counts: Mapping[str, Mapping[int, int]]) -> Distributions:
    """A window's distributions from its `dist_counts` rows (metric -> key -> n; class -1: the other classes)."""
    classes = {key: n for key, n in counts.get("class", {}).items() if key >= 0}
    dist = build(score=counts.get("score"), classes=classes, detections=counts.get("detections"),
                 top_k=max(len(classes), 1))
    return dist.model_copy(update={"class_other": counts.get("class", {}).get(-1, 0)})


def new_row(device_id: str, model: str, version: str, first_bucket: float, now: float) -> WatchRow:
    return WatchRow(device_id=device_id, model_name=model, model_version=version, status="baseline",
                    first_bucket=first_bucket, blocks=0, updated=now)


def _carry(row: WatchRow) -> list[Distributions]:
    return [] if row.carry is None else [Distributions.model_validate_json(row.carry)]


def _scores(row: WatchRow, blocks: Sequence[Distributions], reset: bool = False) -> str:
    total: Counter[int] = Counter() if reset or row.score_counts is None else Counter(
        {int(k): v for k, v in json.loads(row.score_counts).items()})
    for block in blocks:
        total.update(block.score_counts())
    return json.dumps({str(k): v for k, v in sorted(total.items())})


def needs_fit(row: WatchRow, config: DriftConfig) -> bool:
    return row.status == "baseline" and row.blocks >= config.baseline_blocks


def step(row: WatchRow, windows: Sequence[Distributions], config: DriftConfig,
         now: float) -> tuple[WatchRow, tuple[Drift, ...]]:
    """Feeds the row its new windows: the new row and the drift event (the first alarm that put the device
    into drift; none while baselining or already in drift)."""
    if row.status == "unwatched":
        return row, ()
    blocks, rest = split_blocks([*_carry(row), *windows], config.block_frames)
    carry = None if rest is None else rest.model_dump_json()
    if row.status == "baseline":
        return row.model_copy(update={"blocks": row.blocks + len(blocks), "carry": carry, "updated": now}), ()
    device = baseline_from_dict(json.loads(row.baseline or "{}"))
    state, drifts = advance(device, state_from_dict(json.loads(row.cusum or "{}")), blocks)
    updated = row.model_copy(update={"blocks": row.blocks + len(blocks), "carry": carry, "updated": now,
                                     "cusum": json.dumps(state_to_dict(state)),
                                     "score_counts": _scores(row, blocks, reset=bool(drifts))})
    if not drifts:
        return updated, ()
    # One event when the device goes into drift; later alarms only update what moved and by how much.
    return _with_drift(updated, drifts[-1], now), (drifts[:1] if row.status != "drift" else ())


def _with_drift(row: WatchRow, drift: Drift, now: float) -> WatchRow:
    return row.model_copy(update={"status": "drift", "statistic": drift.metric, "direction": drift.direction,
                                  "effect_sd": drift.effect_sd, "effect": drift.effect, "drift_time": now})


def fit_and_run(row: WatchRow, windows: Sequence[Distributions], span_s: float, config: DriftConfig,
                now: float) -> tuple[WatchRow, tuple[Drift, ...]]:
    """The baseline from the row's first `baseline_blocks` blocks (`windows`: every window since its first
    bucket, `span_s` seconds of them), then the CUSUMs over the blocks after it."""
    blocks, rest = split_blocks(windows, config.block_frames)
    per_day = len(blocks) / max(span_s / SECONDS_PER_DAY, 1e-9)
    try:
        device = fit_device(blocks, config, per_day)
    except DriftError as error:
        return row.model_copy(update={"status": "unwatched", "note": f"{error.message}", "carry": None,
                                      "blocks": len(blocks), "updated": now}), ()
    after = blocks[config.baseline_blocks:]
    state, drifts = advance(device, start(device), after)
    fitted = row.model_copy(update={
        "status": "watching", "blocks": len(blocks), "baseline": json.dumps(baseline_to_dict(device)),
        "cusum": json.dumps(state_to_dict(state)), "carry": None if rest is None else rest.model_dump_json(),
        "score_counts": _scores(row, after, reset=True), "updated": now,
        "note": f"baseline: {config.baseline_blocks} blocks, {per_day:.0f} blocks/day"})
    return (_with_drift(fitted, drifts[-1], now), drifts[:1]) if drifts else (fitted, ())
