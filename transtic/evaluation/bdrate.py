"""Bjøntegaard delta rate with piecewise cubic (PCHIP) interpolation.

The rate difference is averaged over the quality interval both curves cover:
log-rate is interpolated as a function of quality with a monotone piecewise
cubic (as in the common "BD-rate with PCHIP" variant of VCEG-M33), both
interpolants are integrated exactly over the overlap, and the mean log-rate gap
is turned into a percentage. Negative means ``test`` needs fewer bits than
``anchor`` for the same quality.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


class BDRateError(ValueError):
    """The curves do not allow a BD-rate (too few points, no overlap, non-monotone)."""


def _curve(rates: Sequence[float], quality: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(rates, dtype=float)
    q = np.asarray(quality, dtype=float)
    if r.shape != q.shape or r.ndim != 1:
        raise BDRateError("rates and qualities must be 1-D and of equal length")
    if len(r) < 2:
        raise BDRateError("a curve needs at least two rate points")
    if np.any(r <= 0) or not np.all(np.isfinite(r)) or not np.all(np.isfinite(q)):
        raise BDRateError("rates must be positive and all values finite")
    order = np.argsort(q)
    q, r = q[order], r[order]
    if np.any(np.diff(q) <= 0):
        raise BDRateError(
            "quality values must be distinct (ties make log-rate(quality) ill-defined)"
        )
    if np.any(np.diff(r) <= 0):
        raise BDRateError("quality must increase with rate (the curve is not monotone)")
    return q, np.log(r)


def bd_rate(
    anchor_rates: Sequence[float],
    anchor_quality: Sequence[float],
    test_rates: Sequence[float],
    test_quality: Sequence[float],
) -> float:
    """Average rate difference of ``test`` versus ``anchor`` in percent at equal quality."""
    from scipy.interpolate import PchipInterpolator

    qa, la = _curve(anchor_rates, anchor_quality)
    qt, lt = _curve(test_rates, test_quality)
    low, high = max(qa[0], qt[0]), min(qa[-1], qt[-1])
    if not high > low:
        raise BDRateError("the curves' quality ranges do not overlap")
    int_a = PchipInterpolator(qa, la).integrate(low, high)
    int_t = PchipInterpolator(qt, lt).integrate(low, high)
    return (math.exp((int_t - int_a) / (high - low)) - 1.0) * 100.0


def bd_rate_or_none(
    anchor_rates: Sequence[float],
    anchor_quality: Sequence[float],
    test_rates: Sequence[float],
    test_quality: Sequence[float],
) -> tuple[float | None, str]:
    """``(value, "")`` or ``(None, reason)`` for tables that must not crash on bad curves."""
    try:
        return bd_rate(anchor_rates, anchor_quality, test_rates, test_quality), ""
    except BDRateError as exc:
        return None, str(exc)


def pareto(rates: list[float], values: list[float]) -> tuple[list[float], list[float]]:
    """Points not dominated by a cheaper one (quality strictly rising with rate).

    Task scores on small sets tie or dip between neighbouring rates; BD-rate needs
    a monotone curve, and the envelope is what an encoder choosing its best
    operating point would achieve.
    """
    kept_r: list[float] = []
    kept_v: list[float] = []
    for r, v in sorted(zip(rates, values, strict=True)):
        if math.isnan(v):
            continue
        if kept_v and v <= kept_v[-1]:
            continue
        if kept_r and r == kept_r[-1]:
            kept_v[-1] = v
            continue
        kept_r.append(r)
        kept_v.append(v)
    return kept_r, kept_v
