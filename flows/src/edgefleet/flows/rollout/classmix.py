"""One class list per release, and how two windows' class counts are made comparable. Pure.

Telemetry schema 3 windows list every class they saw (up to `MAX_RELEASE_CLASSES`), so class mixes are
compared over the release's labels (the manifest's `label_count`). Schema 2 agents cut each window to its own
top 32 and sum the rest in `class_other`; such windows are still judged: every window of the comparison is
cut alike and only the classes all of them list are compared (`comparable`).
"""

from __future__ import annotations

from collections.abc import Sequence

from edgefleet.flows.rollout import histstats as h
from edgefleet.kernel.contracts.distributions import CLASS_TOP_K, Distributions
from edgefleet.kernel.contracts.telemetry import MAX_RELEASE_CLASSES

__all__ = ["MIN_CELL_COUNT", "comparable", "complete", "cut_to_top_k", "release_classes"]


def release_classes(label_count: int | None, reference: Distributions | None,
                    before: Sequence[Distributions] = ()) -> tuple[int, ...]:
    """One class list for the whole release: the manifest's labels (every one, up to `MAX_RELEASE_CLASSES`:
    what a telemetry schema 3 window lists), else the classes the reference names, else those of the canary
    devices' before-windows (fixed: they lie in the past), the most frequent `MAX_RELEASE_CLASSES` of them."""
    if label_count and label_count <= MAX_RELEASE_CLASSES:
        return tuple(range(label_count))
    source = h.pooled([reference.class_counts()] if reference is not None and reference.classes
                      else [dist.class_counts() for dist in before])
    ranked = sorted((k for k in source if k >= 0), key=lambda k: (-source[k], k))
    if not ranked and label_count:
        return tuple(range(MAX_RELEASE_CLASSES))
    return tuple(sorted(ranked[:MAX_RELEASE_CLASSES]))


MIN_CELL_COUNT = 5
"""A class seen fewer times than this in the windows compared (together) is lumped into "other": the
chi-square test's expected counts stay large enough to trust (Cochran's rule), however many labels the
release has."""


def complete(counts: dict[int, float]) -> bool:
    """The window lists every class it saw (nothing in "other", -1): a telemetry schema 3 window of a release
    of up to `MAX_RELEASE_CLASSES` labels. A class it does not list is then a true zero."""
    return counts.get(-1, 0.0) <= 0


def cut_to_top_k(counts: dict[int, float]) -> dict[int, float]:
    """`counts` as a schema 2 agent would have sent them: its own `CLASS_TOP_K` classes, the rest in -1."""
    ranked = sorted((k for k in counts if k >= 0), key=lambda k: (-counts[k], k))
    kept = {k: counts[k] for k in ranked[:CLASS_TOP_K]}
    rest = sum(counts.values()) - sum(kept.values())
    return {**kept, -1: rest} if rest > 0 else kept


def comparable(cells: Sequence[int], *windows: dict[int, float]) -> tuple[list[int], list[dict[int, float]]]:
    """The release's classes to compare `windows` on, and the windows as compared.

    Schema 3 windows (all `complete`) are compared over every release class: a class a window does not list
    is the zero it is (a class that vanishes after the activation counts). When any window is schema 2 (its
    own top 32, the rest in `class_other`), every window is cut alike to its own top 32 (so both sides'
    classes are selected the same way: a complete side is not compared with the other side's winners only),
    and only the classes every window lists are compared, the rest lumped into "other" on every side. Either
    way a class seen fewer than `MIN_CELL_COUNT` times in all windows together is lumped too."""
    if not all(complete(w) for w in windows):
        windows = tuple(cut_to_top_k(w) for w in windows)
        listed = [k for k in cells if all(k in w for w in windows)]
    else:
        listed = list(cells)
    return [k for k in listed if sum(w.get(k, 0.0) for w in windows) >= MIN_CELL_COUNT], list(windows)
