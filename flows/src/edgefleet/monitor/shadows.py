"""The shadow blocks of telemetry 3 in the fleet state (issue 25): merged on ingest, read per device, pruned.

An agent running a candidate beside its model sends, per telemetry window, the pairs of that window
(`ShadowSummary`: frames, candidate errors, top-1 agreements, both models' distributions on the same frames,
the paired score deltas). Every part is a count, so windows add up: the monitor keeps one row per (device,
model, primary version, candidate version, time bucket, metric, key) in `shadow_counts`, summed on ingest
like `dist_counts` (`add_shadow`). `device_pairs` rebuilds each device's `ShadowSummary` over a time range
(the shadow wave's judge reads it, `flows/rollout/shadow.py`), and `shadow_overview` gives each candidate's
top-1 agreement per device for `fleet status`.

Metrics: `frames`, `errors`, `agree` (key 0); `delta` (score delta bucket); `primary.<m>` and `candidate.<m>`
for m in latency / score / class / detections (class key -1: the classes beyond the agent's top K).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from edgefleet.kernel.contracts.distributions import BucketCount, Distributions, build
from edgefleet.kernel.contracts.telemetry import ModelRef, ShadowSummary
from edgefleet.monitor.store import FleetStore, read_snapshot, to_epoch

SCALARS = ("frames", "errors", "agree")
_SIDES = ("primary", "candidate")
ShadowKey = tuple[str, str, str, str, float]
"""(device id, model, primary version, candidate version, bucket start)"""


def shadow_items(summary: ShadowSummary) -> list[tuple[str, int, int]]:
    """The (metric, key, n) counts of one shadow block (zero counts left out). Pure."""
    items = [("frames", 0, summary.frames), ("errors", 0, summary.errors), ("agree", 0, summary.top1_agree)]
    items += [("delta", bucket.i, bucket.n) for bucket in summary.score_delta]
    for side, dist in zip(_SIDES, (summary.primary, summary.candidate), strict=True):
        if dist is None:
            continue
        items += [(f"{side}.latency", b.i, b.n) for b in dist.latency]
        items += [(f"{side}.score", b.i, b.n) for b in dist.score]
        items += [(f"{side}.detections", b.i, b.n) for b in dist.detections]
        items += [(f"{side}.class", c.id, c.n) for c in dist.classes]
        items.append((f"{side}.class", -1, dist.class_other))
    return [(metric, key, n) for metric, key, n in items if n > 0]


def add_shadow(shadows: dict, key: ShadowKey, summary: ShadowSummary) -> None:
    """Adds one shadow block to its (device, model, primary, candidate, bucket), pending until commit
    (`PendingRows.shadows`)."""
    for metric, index, n in shadow_items(summary):
        shadows[(*key, metric, index)] += n


def summary_of(model: ModelRef, counts: dict[str, dict[int, int]]) -> ShadowSummary:
    """The `ShadowSummary` of summed counts (`metric -> key -> n`); validated like a received one. Pure."""
    frames, errors = counts["frames"].get(0, 0), counts["errors"].get(0, 0)
    sides: dict[str, Distributions | None] = {}
    for side in _SIDES:
        classes = {key: n for key, n in counts[f"{side}.class"].items() if key >= 0}
        parts = (counts[f"{side}.latency"], counts[f"{side}.score"], classes, counts[f"{side}.detections"])
        if not any(parts) and not counts[f"{side}.class"].get(-1):
            sides[side] = None
            continue
        dist = build(latency=parts[0], score=parts[1], classes=classes, detections=parts[3],
                     top_k=max(len(classes), 1))
        sides[side] = dist.model_copy(update={"class_other": counts[f"{side}.class"].get(-1, 0)})
    return ShadowSummary(model=model, frames=frames, errors=errors, top1_agree=counts["agree"].get(0, 0),
                         primary=sides["primary"], candidate=sides["candidate"],
                         score_delta=[BucketCount(i=i, n=n) for i, n in sorted(counts["delta"].items())])


class DevicePairs(BaseModel):
    """One device's pairs with one candidate over a time range (`summary` None: it reported none)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    device_id: str
    primary: tuple[str, ...]
    """The primary versions the pairs were made beside (normally one)."""
    summary: ShadowSummary | None


def _bucket_floor(store: FleetStore, moment: datetime) -> float:
    epoch = to_epoch(moment)
    return epoch - epoch % store.count_bucket_s


def device_pairs(store: FleetStore, device_ids: Iterable[str], model: str, candidate: str, since: datetime,
                 *, primary: str | None = None) -> dict[str, DevicePairs]:
    """Each of `device_ids`' pairs with `candidate` (beside `primary`, or any primary) from `since` (rounded
    down to a bucket start) up to now: the shadow wave's judge input."""
    device_ids = list(dict.fromkeys(device_ids))
    counts: dict[str, dict[str, dict[int, int]]] = defaultdict(lambda: defaultdict(dict))
    primaries: dict[str, set[str]] = defaultdict(set)
    query = ("SELECT device_id, primary_version, metric, key, SUM(n) FROM shadow_counts WHERE model_name = ? "
             "AND candidate_version = ? AND bucket_start >= ? AND device_id IN (SELECT value FROM json_each(?))")
    params: tuple = (model, candidate, _bucket_floor(store, since), json.dumps(device_ids))
    if primary is not None:
        query += " AND primary_version = ?"
        params += (primary,)
    with read_snapshot(store) as connection:
        for device_id, primary_version, metric, key, n in connection.execute(
                query + " GROUP BY device_id, primary_version, metric, key", params):
            bucket = counts[device_id][metric]
            bucket[key] = bucket.get(key, 0) + int(n)
            primaries[device_id].add(primary_version)
    ref = ModelRef(name=model, version=candidate, variant="cpu", backend="shadow")
    return {device_id: DevicePairs(device_id=device_id, primary=tuple(sorted(primaries[device_id])),
                                   summary=summary_of(ref, counts[device_id]) if device_id in counts else None)
            for device_id in device_ids}


class ShadowAgreement(BaseModel):
    """One device's top-1 agreement with one candidate (what `fleet status` shows beside the device)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    device_id: str
    model: str
    candidate: str
    frames: int
    errors: int
    agreement: float | None
    """top-1 agreements / answered pairs (None: no answered pair)."""


def shadow_overview(store: FleetStore, device_ids: Iterable[str], since: datetime) -> dict[str, ShadowAgreement]:
    """Per device of `device_ids`, its most recently reported candidate's agreement since `since`."""
    ids = json.dumps(list(dict.fromkeys(device_ids)))
    totals: dict[tuple[str, str, str], dict[str, int]] = defaultdict(lambda: dict.fromkeys(SCALARS, 0))
    latest: dict[str, tuple[float, tuple[str, str, str]]] = {}
    with read_snapshot(store) as connection:
        for device_id, model, candidate, metric, newest, n in connection.execute(
                "SELECT device_id, model_name, candidate_version, metric, MAX(bucket_start), SUM(n) "
                "FROM shadow_counts WHERE bucket_start >= ? AND metric IN ('frames', 'errors', 'agree') "
                "AND device_id IN (SELECT value FROM json_each(?)) "
                "GROUP BY device_id, model_name, candidate_version, metric", (_bucket_floor(store, since), ids)):
            key = (device_id, model, candidate)
            totals[key][metric] += int(n)
            if device_id not in latest or latest[device_id][0] < newest:
                latest[device_id] = (newest, key)
    found = {}
    for device_id, (_, key) in latest.items():
        frames, errors, agree = (totals[key][name] for name in SCALARS)
        answered = frames - errors
        found[device_id] = ShadowAgreement(device_id=device_id, model=key[1], candidate=key[2], frames=frames,
                                           errors=errors, agreement=agree / answered if answered > 0 else None)
    return found
