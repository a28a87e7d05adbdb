"""Paired bootstrap intervals on synthetic per-photo results with known answers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from transtic.evaluation.bootstrap import (
    bd_rate_intervals,
    comparison_pairs,
    confident_photos,
    interval,
    resample_indices,
    score_intervals,
    summary,
)
from transtic.evaluation.report import bd_matrix, markdown


def synthetic(photos: int, rate_factor: float, noise: float = 0.0, seed: int = 0) -> dict[str, Any]:
    """Two methods on the same photos: 'transtic' spends ``rate_factor`` times the anchor's
    bits for the same per-photo quality, times lognormal per-photo ``noise``. Photos
    differ a lot in difficulty (a shared per-photo rate scale), as real photos do."""
    rng = np.random.default_rng(seed)
    difficulty = rng.lognormal(0.0, 0.8, photos)
    jitter = rng.lognormal(0.0, noise, photos) if noise else np.ones(photos)
    points = []
    for method, factor in (("jpeg", 1.0), ("transtic", rate_factor)):
        for level in (1.0, 2.0, 3.0, 4.0):
            bpp = 0.1 * level * difficulty * factor * (jitter if method == "transtic" else 1.0)
            quality = np.full(photos, 10.0 * np.log(level))
            kl = np.full(photos, 1.0 / level)
            points.append(
                {
                    "method": method,
                    "point": f"l{level:g}",
                    "bpp": float(bpp.mean()),
                    "bpp_payload": float(bpp.mean()),
                    "psnr": 0.0,
                    "scores": {"top1_agreement": float(quality.mean()), "kl_divergence": 1 / level},
                    "per_image": {
                        "bpp": bpp.tolist(),
                        "bpp_payload": bpp.tolist(),
                        "top1_agreement": quality.tolist(),
                        "kl_divergence": kl.tolist(),
                    },
                }
            )
    probabilities = np.linspace(0.05, 0.95, photos).tolist()
    return {
        "task": "classification",
        "primary_metric": "top1_agreement",
        "num_images": photos,
        "reference": {"top1_agreement": 100.0},
        "reference_per_image": {"top1_probability": probabilities},
        "points": points,
    }


def test_resamples_are_fixed_by_the_seed_and_draw_from_the_given_photos() -> None:
    a = resample_indices([3, 5, 7], resamples=50, seed=1)
    assert a.shape == (50, 3) and set(np.unique(a)) <= {3, 5, 7}
    assert (a == resample_indices([3, 5, 7], resamples=50, seed=1)).all()
    assert not (a == resample_indices([3, 5, 7], resamples=50, seed=2)).all()


def test_the_interval_of_a_mean_covers_it_and_narrows_with_more_photos() -> None:
    rng = np.random.default_rng(0)
    small, large = rng.normal(10, 2, 30), rng.normal(10, 2, 1000)
    a = interval(lambda idx: float(small[idx].mean()), range(30), 300)
    b = interval(lambda idx: float(large[idx].mean()), range(1000), 300)
    assert a.low < small.mean() < a.high and b.low < large.mean() < b.high
    assert (b.high - b.low) < (a.high - a.low) / 3
    # the usual standard error: 2 / sqrt(1000) ~ 0.063, so a width near 4 of them
    assert 0.15 < b.high - b.low < 0.35


def test_half_the_bits_on_every_photo_is_minus_fifty_with_a_zero_width_interval() -> None:
    result = synthetic(40, rate_factor=0.5)
    (iv,) = bd_rate_intervals(result, "top1_agreement", resamples=100).values()
    assert iv.estimate == pytest.approx(-50.0)
    assert iv.low == pytest.approx(-50.0) and iv.high == pytest.approx(-50.0)
    assert iv.resamples == 100


def test_lower_is_better_scores_are_turned_round() -> None:
    result = synthetic(20, rate_factor=0.5)
    (iv,) = bd_rate_intervals(result, "kl_divergence", resamples=20).values()
    assert iv.estimate == pytest.approx(-50.0)
    assert bd_matrix(result, "kl_divergence")["transtic"]["jpeg"] == pytest.approx(-50.0)


def test_pairing_cancels_the_photos_own_difficulty() -> None:
    # Photos' rates spread ~2x either way, but the test method's ratio to the anchor
    # varies by only ~5 % per photo: a paired interval is a few percent wide.
    result = synthetic(60, rate_factor=0.8, noise=0.05)
    (iv,) = bd_rate_intervals(result, "top1_agreement", resamples=400).values()
    assert iv.low < iv.estimate < iv.high
    assert iv.low > -24 and iv.high < -16
    assert iv.high - iv.low < 6


def test_subsets_pairs_and_summary() -> None:
    result = synthetic(10, rate_factor=0.5)
    assert confident_photos(result) == [i for i in range(10) if 0.05 + 0.1 * i >= 0.5]
    assert comparison_pairs(["transtic", "tic", "jpeg", "webp"]) == [
        ("transtic", "jpeg"), ("transtic", "webp"), ("tic", "jpeg"), ("tic", "webp"),
        ("transtic", "tic"),
    ]  # fmt: skip
    out = summary(result, resamples=20)
    assert out["photos"] == {"all": 10, "confident": 5}
    bd = out["bd_rate"]["confident"]["bpp"]["kl_divergence"]["transtic vs jpeg"]
    assert bd["estimate"] == pytest.approx(-50.0)
    scores = score_intervals(result, [0], resamples=5)
    assert scores["transtic l1"]["kl_divergence"].estimate == 1.0
    text = markdown({**result, "bootstrap": out})
    assert "Paired bootstrap 95% intervals" in text and "-50.0 [-50.0, -50.0]" in text


def test_curves_that_stop_overlapping_give_no_value_not_a_crash() -> None:
    result = synthetic(10, rate_factor=0.5)
    for p in result["points"]:
        if p["method"] == "transtic":
            p["per_image"]["top1_agreement"] = [v + 1000 for v in p["per_image"]["top1_agreement"]]
    (iv,) = bd_rate_intervals(result, "top1_agreement", resamples=10).values()
    assert iv.estimate is None and iv.reason
