"""A one-sided CUSUM's run lengths and its threshold from a false-alarm budget. Pure (numpy/scipy).

Siegmund's approximation gives the average run length of a one-sided CUSUM (reference k, threshold h) on
independent N(shift, 1) increments: ARL = (e^x - x - 1) / (2 delta^2), delta = shift - k, x = -2 delta b,
b = h + 1.166 (the overshoot correction).

A device's increments are standardized by its baseline's *estimates*, not by the truth. With N baseline
blocks the mean is off by e / sqrt(N) true long-run SDs (e ~ N(0, 1): the mean of N correlated blocks has the
long-run variance over N) and the long-run SD by a factor rho (log rho ~ N(0, se^2), se the estimator's own
relative standard error). Divided by rho, the CUSUM that runs (k, h) on the estimated scale is one that runs
(k / rho, h / rho) on unit increments shifted by e / sqrt(N). A fleet of devices, each with its own baseline,
raises false alarms at the average over those errors of 1 / ARL per block, so the threshold solves

    E_{e, rho}[ 1 / ARL(h / rho, k / rho, e / sqrt(N)) ] = 1 / ARL0,

ARL0 the budget's in-control run length. The expectation is a Gauss-Hermite quadrature (`numpy.polynomial.
hermite_e`); the root is `scipy.optimize.brentq`. With N -> infinity and se -> 0 it is Siegmund's threshold.
"""

from __future__ import annotations

import math
from typing import overload

import numpy as np
from numpy.polynomial.hermite_e import hermegauss
from scipy.optimize import brentq
from scipy.special import logsumexp

from edgefleet.monitor.drift.config import DriftError

SIEGMUND_CORRECTION = 1.166
"""Siegmund's overshoot correction of a normal CUSUM's threshold (2 x 0.583)."""
MAX_THRESHOLD = 1_000.0
QUADRATURE_NODES = 24
"""Gauss-Hermite nodes per estimation error (mean, spread): exact for polynomials of degree 47."""
FLAT = 1e-9
"""|delta| below this is the drift-free limit of Siegmund's formula, 2 log b."""


@overload
def log_siegmund_arl(h: float, k: float, shift: float = 0.0) -> float: ...
@overload
def log_siegmund_arl(h: np.ndarray | float, k: np.ndarray | float, shift: np.ndarray | float = 0.0) -> np.ndarray: ...
def log_siegmund_arl(h: np.ndarray | float, k: np.ndarray | float,
                     shift: np.ndarray | float = 0.0) -> np.ndarray | float:
    """log of Siegmund's average run length, without overflow (arrays broadcast; floats give a float)."""
    h_, k_, shift_ = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (h, k, shift)))
    delta, b = shift_ - k_, h_ + SIEGMUND_CORRECTION
    x = -2 * delta * b
    flat = np.abs(delta) < FLAT
    safe_x = np.where(flat, 1.0, x)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        large = safe_x + np.log1p(-(safe_x + 1) * np.exp(-np.maximum(safe_x, 1.0)))  # e^x dominates
        small = np.log(np.expm1(np.minimum(safe_x, 1.0)) - np.minimum(safe_x, 1.0))
        value = np.where(safe_x > 1, large, small) - np.log(2 * np.where(flat, 1.0, delta) ** 2)
    out = np.where(flat, 2 * np.log(b), value)
    return float(out) if out.ndim == 0 else out


def siegmund_arl(h: float, k: float, shift: float = 0.0) -> float:
    """Average run length (blocks) of a one-sided CUSUM with reference k and threshold h on N(shift, 1)."""
    return math.exp(log_siegmund_arl(h, k, shift))


def threshold_for(arl0_blocks: float, k: float) -> float:
    """The h whose in-control average run length is `arl0_blocks` (Siegmund, the estimates taken as exact)."""
    return integrated_threshold(arl0_blocks, k, baseline_blocks=None, spread_se=0.0)


def log_false_alarm_rate(h: float, k: float, baseline_blocks: int | None, spread_se: float) -> float:
    """log of the expected false alarms per block over the baseline's estimation errors (module docstring)."""
    nodes, weights = hermegauss(QUADRATURE_NODES)
    log_w = np.log(weights / weights.sum())
    mean_error = nodes / math.sqrt(baseline_blocks) if baseline_blocks else np.zeros(1)
    mean_w = log_w if baseline_blocks else np.zeros(1)
    rho = np.exp(spread_se * nodes) if spread_se > 0 else np.ones(1)
    rho_w = log_w if spread_se > 0 else np.zeros(1)
    log_arl = log_siegmund_arl(h / rho[None, :], k / rho[None, :], mean_error[:, None])
    return float(np.asarray(logsumexp(mean_w[:, None] + rho_w[None, :] - log_arl)))  # without return_sign: the value


def integrated_threshold(arl0_blocks: float, k: float, baseline_blocks: int | None, spread_se: float) -> float:
    """The h at which a fleet of such baselines raises one false alarm per `arl0_blocks` blocks on average."""
    target = -math.log(arl0_blocks)
    if log_false_alarm_rate(0.0, k, baseline_blocks, spread_se) <= target:
        return 0.0
    if log_false_alarm_rate(MAX_THRESHOLD, k, baseline_blocks, spread_se) > target:
        raise DriftError(f"drift threshold: no threshold up to {MAX_THRESHOLD:g} holds one false alarm per "
                         f"{arl0_blocks:.0f} blocks with a baseline of {baseline_blocks} blocks (spread known to "
                         f"{spread_se:.0%}): its mean is too uncertain for a reference of {k:.2f}",
                         "lengthen drift.baseline_blocks, or raise reference_shift_sd or the false-alarm budget")
    root, _ = brentq(lambda h: log_false_alarm_rate(h, k, baseline_blocks, spread_se) - target,
                     0.0, MAX_THRESHOLD, full_output=True)  # the root alone is typed a root-or-tuple
    return float(root)
