"""Blocks of frames and their statistics, from the telemetry's mergeable distributions. Pure.

A block is one or more consecutive telemetry windows of one device holding at least `block_frames` frames
(a window is never split: at 30 fps and 10 s windows a block is one window of 300 frames). Per block:

| statistic      | value                                                        | natural units        |
|----------------|--------------------------------------------------------------|----------------------|
| `class_mix`    | cube root of Jensen-Shannon(block's mix, baseline's mix)     | JS divergence (cube) |
| `score_median` | top-1 score median, interpolated inside its bucket           | score (0..1)         |
| `detections`   | mean detections per frame (detectors)                        | detections / frame   |

The divergence of a noisy sample from its mean is skewed like a chi-square; its cube root is close to
normal (Wilson-Hilferty, as the canary judge's `cube_root`), which a CUSUM's threshold assumes. The class
cells are the baseline's classes (its top K), everything else in one "other" cell; a class the baseline
expects fewer than `MIN_EXPECTED_PER_CELL` times per block is pooled into that cell too (the chi-square rule:
one frame of a class seen once in 400 frames would otherwise make the block's divergence jump, a heavy tail
no normal threshold holds).

Everything works on count matrices (blocks x buckets), so a fleet-day of blocks is a few array operations.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.spatial.distance import jensenshannon

from edgefleet.kernel.contracts.distributions import DETECTION_BUCKETS, SCORE_BUCKETS, Distributions, merge
from edgefleet.kernel.contracts.telemetry import MAX_RELEASE_CLASSES
from edgefleet.monitor.drift.config import MetricName

Stats = dict[MetricName, np.ndarray]
MIN_EXPECTED_PER_CELL = 5.0
"""A class cell is kept apart only when the baseline expects at least this many of it per block."""
BASELINE_FOLDS = 10
"""The baseline's class-mix statistic is computed out of fold (`held_out_divergence`): each block against the
other 90% of the baseline."""


def blocks_from_windows(windows: Sequence[Distributions], block_frames: int) -> list[Distributions]:
    """Consecutive windows merged into blocks of at least `block_frames` scored frames (the unfinished rest
    is left out: it waits for the next windows)."""
    return split_blocks(windows, block_frames)[0]


def split_blocks(windows: Sequence[Distributions], block_frames: int) -> tuple[list[Distributions],
                                                                              Distributions | None]:
    """(the blocks, the unfinished rest merged: None when nothing is left over), as `blocks_from_windows`."""
    blocks: list[Distributions] = []
    pending: list[Distributions] = []
    frames = 0
    for window in windows:
        pending.append(window)
        frames += sum(window.score_counts().values())
        if frames >= block_frames:
            blocks.append(merge(pending, top_k=MAX_RELEASE_CLASSES))  # every class: one list per release
            pending, frames = [], 0
    return blocks, (merge(pending, top_k=MAX_RELEASE_CLASSES) if pending else None)


def count_matrices(blocks: Sequence[Distributions], classes: Sequence[int]) -> tuple[np.ndarray, ...]:
    """(class counts over `classes` + other, score counts, detection counts), one row per block."""
    listed = set(classes)
    mix = np.array([[b.class_counts().get(c, 0) for c in classes]
                    + [sum(n for c, n in b.class_counts().items() if c not in listed)] for b in blocks], float)
    score = np.zeros((len(blocks), SCORE_BUCKETS))
    detections = np.zeros((len(blocks), DETECTION_BUCKETS))
    for row, block in enumerate(blocks):
        for index, count in block.score_counts().items():
            score[row, index] = count
        for index, count in block.detection_counts().items():
            detections[row, index] = count
    return mix.reshape(len(blocks), len(classes) + 1), score, detections


def baseline_classes(blocks: Sequence[Distributions]) -> tuple[int, ...]:
    """The class cells: the classes the baseline blocks name (their top K), in id order."""
    return tuple(sorted({c for b in blocks for c in b.class_counts() if c >= 0}))


def interpolated_median(counts: np.ndarray) -> np.ndarray:
    """Per row of a (blocks x SCORE_BUCKETS) count matrix, the median score with the observations spread
    evenly inside their bucket (as `flows.rollout.histstats.score_median`, vectorized); NaN for empty rows."""
    total = counts.sum(axis=1)
    cumulative = np.cumsum(counts, axis=1)
    target = total / 2
    index = np.argmax(cumulative >= target[:, None], axis=1)
    rows = np.arange(len(counts))
    below = cumulative[rows, index] - counts[rows, index]
    inside = np.divide(target - below, counts[rows, index], out=np.zeros(len(counts)),
                       where=counts[rows, index] > 0)
    median = (index + inside) / counts.shape[1]
    return np.where(total > 0, median, np.nan)


def pooled_cells(mix: np.ndarray, reference: np.ndarray, block_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(mix, reference) with every cell the reference expects fewer than `MIN_EXPECTED_PER_CELL` times per
    block of `block_frames` moved into one extra last cell (last axis: cells; `reference` may be one per
    series, broadcast against `mix`)."""
    rare = rare_cells(reference, block_frames)
    return pool(mix, rare), pool(reference, rare)


def rare_cells(reference: np.ndarray, block_frames: int) -> np.ndarray:
    """The cells `reference` expects fewer than `MIN_EXPECTED_PER_CELL` times per block."""
    share = reference / reference.sum(axis=-1, keepdims=True)
    return share * block_frames < MIN_EXPECTED_PER_CELL


def pool(counts: np.ndarray, rare: np.ndarray) -> np.ndarray:
    """`counts` with the `rare` cells (broadcast) summed into one extra last cell."""
    rare_here = np.broadcast_to(rare, counts.shape)
    kept = np.where(rare_here, 0.0, counts)
    return np.concatenate([kept, np.where(rare_here, counts, 0.0).sum(axis=-1, keepdims=True)], axis=-1)


def held_out_divergence(mix: np.ndarray, block_frames: int, folds: int = BASELINE_FOLDS) -> np.ndarray:
    """The baseline's own class-mix statistic, each block against the mix of the baseline WITHOUT its fold
    (`folds` contiguous folds; cells pooled as the whole baseline's reference pools them). Against a reference
    that contains the block itself, a baseline block is closer to it than any later block will be: the scene
    wanders, so 500 blocks' mix is itself an estimate, and in-sample divergences would be biased low (the
    later, out-of-sample blocks then look shifted up for ever)."""
    total = mix.sum(axis=0)
    rare = rare_cells(total, block_frames)
    fold = np.arange(len(mix)) * folds // len(mix)
    out = np.empty(mix.shape[:-1])
    for index in range(folds):
        rows = fold == index
        out[rows] = mix_divergence(pool(mix[rows], rare), pool(total - mix[rows].sum(axis=0), rare))
    return out


def mix_divergence(mix: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Cube root of the Jensen-Shannon divergence (base 2) of each mix (last axis: cells) from `reference`
    (broadcast against `mix`: one reference, or one per series)."""
    rows = mix / np.maximum(mix.sum(axis=-1, keepdims=True), 1)
    ref = np.broadcast_to(reference / reference.sum(axis=-1, keepdims=True), rows.shape)
    # scipy's bundled distance.pyi lists jensenshannon without its keyword-only axis (scipy >= 1.7 has it,
    # and then returns one divergence per row, not a float64)
    divergence = jensenshannon(rows, ref, axis=-1, base=2) ** 2  # pyright: ignore[reportCallIssue]
    return np.cbrt(np.nan_to_num(divergence))


def mean_detections(detections: np.ndarray) -> np.ndarray:
    """Mean detections per frame of each row of a (blocks x DETECTION_BUCKETS) matrix; NaN for empty rows."""
    total = detections.sum(axis=1)
    weighted = detections @ np.arange(detections.shape[1])
    return np.divide(weighted, total, out=np.full(len(total), np.nan), where=total > 0)


def block_statistics(mix: np.ndarray, score: np.ndarray, detections: np.ndarray | None,
                     reference_mix: np.ndarray, block_frames: int) -> Stats:
    """Every statistic of every block (rows); `detections` None for a classifier."""
    stats: Stats = {"class_mix": mix_divergence(*pooled_cells(mix, reference_mix, block_frames)),
                    "score_median": interpolated_median(score)}
    if detections is not None:
        stats["detections"] = mean_detections(detections)
    return stats


def baseline_statistics(mix: np.ndarray, score: np.ndarray, detections: np.ndarray | None,
                        block_frames: int) -> Stats:
    """`block_statistics` of the baseline's own blocks, their reference being their own mix: the class mix
    out of fold (`held_out_divergence`), so the baseline sees what later blocks will."""
    stats = block_statistics(mix, score, detections, mix.sum(axis=0), block_frames)
    stats["class_mix"] = held_out_divergence(mix, block_frames)
    return stats


def natural(metric: MetricName, values: np.ndarray) -> np.ndarray:
    """A statistic in its natural units (the class mix's divergence uncubed)."""
    return values**3 if metric == "class_mix" else values
