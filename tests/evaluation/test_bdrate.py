"""BD-rate against hand-computed cases."""

from __future__ import annotations

import math

import pytest

from transtic.evaluation import BDRateError, bd_rate, bd_rate_or_none

RATES = [0.1, 0.2, 0.4, 0.8]
QUALITY = [28.0, 31.0, 33.5, 36.0]


def test_identical_curves_give_zero() -> None:
    assert bd_rate(RATES, QUALITY, RATES, QUALITY) == pytest.approx(0.0, abs=1e-12)


def test_half_the_rate_everywhere_is_minus_fifty_percent() -> None:
    half = [r / 2 for r in RATES]
    assert bd_rate(RATES, QUALITY, half, QUALITY) == pytest.approx(-50.0, abs=1e-9)
    assert bd_rate(half, QUALITY, RATES, QUALITY) == pytest.approx(100.0, abs=1e-9)


def test_constant_log_rate_gap_only_on_the_overlap() -> None:
    # Log-rate linear in quality (PCHIP keeps collinear points linear); the test
    # curve is 10% cheaper and covers only the middle of the anchor's range.
    anchor = ([math.exp(0.0), math.exp(0.5), math.exp(1.0)], [0.0, 1.0, 2.0])
    test = ([0.9 * math.exp(0.25), 0.9 * math.exp(0.75)], [0.5, 1.5])
    assert bd_rate(*anchor, *test) == pytest.approx(-10.0, abs=1e-9)


def test_linear_two_point_case_by_hand() -> None:
    # Two points each: PCHIP is linear, log R(q) = a + b q; the gap is constant 0.1.
    anchor = ([1.0, math.e], [0.0, 1.0])
    test = ([math.exp(0.1), math.exp(1.1)], [0.0, 1.0])
    assert bd_rate(*anchor, *test) == pytest.approx((math.exp(0.1) - 1) * 100, abs=1e-9)


def test_order_of_points_does_not_matter() -> None:
    rev = (RATES[::-1], QUALITY[::-1])
    half = [r / 2 for r in RATES]
    assert bd_rate(*rev, half, QUALITY) == pytest.approx(-50.0, abs=1e-9)


@pytest.mark.parametrize(
    ("rates", "quality"),
    [
        ([0.1], [30.0]),  # one point
        ([0.1, 0.2], [30.0, 30.0]),  # tie in quality
        ([0.1, 0.2], [31.0, 30.0]),  # quality falls as rate rises
        ([0.0, 0.2], [30.0, 31.0]),  # zero rate
    ],
)
def test_bad_curves_raise(rates: list[float], quality: list[float]) -> None:
    with pytest.raises(BDRateError):
        bd_rate(RATES, QUALITY, rates, quality)
    value, why = bd_rate_or_none(RATES, QUALITY, rates, quality)
    assert value is None and why


def test_no_overlap_raises() -> None:
    with pytest.raises(BDRateError, match="overlap"):
        bd_rate(RATES, QUALITY, [1.0, 2.0], [40.0, 42.0])


# Rate-quality curves of the shapes evaluations produce: PSNR-like and accuracy-like,
# equal and unequal point counts, partial overlap.
CROSS_CHECK_CURVES = [
    (([0.1, 0.2, 0.4, 0.8], [28.0, 31.0, 33.5, 36.0]),
     ([0.09, 0.21, 0.35, 0.7], [28.3, 31.1, 33.2, 36.4])),
    (([0.12, 0.25, 0.5, 0.9], [41.0, 55.0, 66.0, 71.0]),
     ([0.15, 0.3, 0.45, 0.8], [50.0, 60.0, 67.0, 73.0])),
    (([0.05, 0.1, 0.2, 0.4, 0.8], [26.0, 28.5, 31.0, 33.0, 35.0]),
     ([0.04, 0.08, 0.18, 0.3, 0.6], [26.5, 28.8, 31.5, 33.4, 35.5])),
]  # fmt: skip


@pytest.mark.parametrize(("anchor", "test"), CROSS_CHECK_CURVES)
def test_matches_the_bjontegaard_package(
    anchor: tuple[list[float], list[float]], test: tuple[list[float], list[float]]
) -> None:
    """Our PCHIP BD-rate against an independent implementation (PyPI ``bjontegaard``)."""
    import bjontegaard  # dev extra; a missing package must fail, not skip

    theirs = bjontegaard.bd_rate(*anchor, *test, method="pchip", min_overlap=0.0)
    assert bd_rate(*anchor, *test) == pytest.approx(theirs, abs=1e-6)
