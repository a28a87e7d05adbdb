"""Paired bootstrap 95 % intervals over photos for BD-rates and mean scores.

With a hundred-odd photos a BD-rate of a few percent can be one photo's doing.
Each resample draws the photos with replacement *once* and recomputes every
method's curve from those same photos (the pairing: the photos' own difficulty
cancels between the two methods compared), then the Pareto fronts and the
BD-rate. The interval is the 2.5th and 97.5th percentile over ``RESAMPLES``
resamples drawn from a fixed seed, so a rerun gives the same numbers.

Only quantities that are means over photos can be resampled: rates, PSNR and the
classification scores (``classifier_scores``); COCO mAP is not, and gets none.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .bdrate import BDRateError, bd_rate, pareto
from .classifier_scores import LOWER_IS_BETTER

RESAMPLES = 1000
SEED = 0
CONFIDENCE = 0.95
#: The subset reported beside all photos: those the classifier is sure of.
CONFIDENT_PROBABILITY = 0.5
ANCHOR_METHODS = ("jpeg", "webp")


@dataclass(frozen=True)
class Interval:
    """An estimate on the photos as drawn, with its bootstrap interval."""

    estimate: float | None
    low: float | None = None
    high: float | None = None
    resamples: int = 0  # resamples that gave a value (a BD-rate can lack overlap)
    reason: str = ""  # why there is no estimate

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resample_indices(
    photos: Sequence[int], resamples: int = RESAMPLES, seed: int = SEED
) -> np.ndarray:
    """(resamples, len(photos)) photo indices drawn with replacement from ``photos``."""
    rng = np.random.default_rng(seed)
    pool = np.asarray(photos, dtype=int)
    return pool[rng.integers(0, len(pool), size=(resamples, len(pool)))]


def interval(
    statistic: Callable[[np.ndarray], float | None],
    photos: Sequence[int],
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> Interval:
    """``statistic(indices)`` on ``photos`` and its percentile interval over resamples.

    ``statistic`` returns None where it has no value (e.g. curves that no longer
    overlap); such resamples are counted out and the count is reported.
    """
    estimate = statistic(np.asarray(photos, dtype=int))
    if estimate is None:
        return Interval(None, reason="no value on the photos as drawn")
    values = [statistic(idx) for idx in resample_indices(photos, resamples, seed)]
    kept = np.asarray([v for v in values if v is not None and math.isfinite(v)])
    if not len(kept):
        return Interval(estimate, reason="no resample gave a value")
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(kept, [tail, 100 - tail])
    return Interval(estimate, float(low), float(high), len(kept))


class PerPhotoCurves:
    """Each method's points as (points, photos) arrays of a rate and of a score."""

    def __init__(self, result: dict[str, Any], metric: str, rate: str = "bpp") -> None:
        sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
        self.rates: dict[str, np.ndarray] = {}
        self.quality: dict[str, np.ndarray] = {}
        grouped: dict[str, list[dict[str, Any]]] = {}
        for point in result["points"]:
            values = point.get("per_image", {})
            if rate in values and metric in values:
                grouped.setdefault(point["method"], []).append(values)
        for method, points in grouped.items():
            self.rates[method] = np.asarray([p[rate] for p in points], dtype=float)
            # oriented so that quality rises with rate for every score
            self.quality[method] = sign * np.asarray([p[metric] for p in points], dtype=float)

    @property
    def methods(self) -> list[str]:
        return list(self.rates)

    def bd_rate(self, test: str, anchor: str, photos: np.ndarray) -> float | None:
        """BD-rate (%) of ``test`` against ``anchor`` on the curves of these photos."""
        try:
            return bd_rate(*self._front(anchor, photos), *self._front(test, photos))
        except BDRateError:
            return None

    def _front(self, method: str, photos: np.ndarray) -> tuple[list[float], list[float]]:
        rates = self.rates[method][:, photos].mean(axis=1)
        quality = self.quality[method][:, photos].mean(axis=1)
        return pareto(rates.tolist(), quality.tolist())


def comparison_pairs(
    methods: Sequence[str], anchors: Sequence[str] = ANCHOR_METHODS
) -> list[tuple[str, str]]:
    """(test, anchor): every learned method against each classic codec, then each
    learned method against those listed after it (prompted before its base)."""
    learned = [m for m in methods if m not in anchors]
    present = [a for a in anchors if a in methods]
    pairs = [(m, a) for m in learned for a in present]
    return pairs + [(a, b) for i, a in enumerate(learned) for b in learned[i + 1 :]]


def confident_photos(
    result: dict[str, Any], threshold: float = CONFIDENT_PROBABILITY
) -> list[int] | None:
    """Photos whose reference top-1 probability is at least ``threshold`` (None: unknown)."""
    probabilities = result.get("reference_per_image", {}).get("top1_probability")
    if probabilities is None:
        return None
    return [i for i, p in enumerate(probabilities) if p >= threshold]


def bootstrap_metrics(result: dict[str, Any]) -> list[str]:
    """Scores with per-photo values in every point (PSNR included), in first-seen order."""
    names: list[str] = []
    for point in result["points"]:
        names += [k for k in point.get("per_image", {}) if k not in names]
    return [n for n in names if not n.startswith("bpp")]


def bd_rate_intervals(
    result: dict[str, Any],
    metric: str,
    rate: str = "bpp",
    photos: Sequence[int] | None = None,
    pairs: Iterable[tuple[str, str]] | None = None,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> dict[str, Interval]:
    """``"test vs anchor"`` -> BD-rate interval on ``metric``, over ``photos`` (all)."""
    curves = PerPhotoCurves(result, metric, rate)
    photos = list(range(result["num_images"])) if photos is None else list(photos)
    out: dict[str, Interval] = {}
    for test, anchor in comparison_pairs(curves.methods) if pairs is None else pairs:
        if not photos:
            out[f"{test} vs {anchor}"] = Interval(None, reason="no photos")
            continue
        out[f"{test} vs {anchor}"] = interval(
            _bd_statistic(curves, test, anchor), photos, resamples, seed
        )
    return out


def _bd_statistic(
    curves: PerPhotoCurves, test: str, anchor: str
) -> Callable[[np.ndarray], float | None]:
    return lambda photos: curves.bd_rate(test, anchor, photos)


def _mean_statistic(values: np.ndarray) -> Callable[[np.ndarray], float | None]:
    return lambda photos: float(values[photos].mean())


def score_intervals(
    result: dict[str, Any],
    photos: Sequence[int] | None = None,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> dict[str, dict[str, Interval]]:
    """``"method point"`` -> score -> the mean over ``photos`` with its interval."""
    photos = list(range(result["num_images"])) if photos is None else list(photos)
    out: dict[str, dict[str, Interval]] = {}
    for point in result["points"]:
        row: dict[str, Interval] = {}
        for name, values in point.get("per_image", {}).items():
            array = np.asarray(values, dtype=float)
            row[name] = (
                interval(_mean_statistic(array), photos, resamples, seed)
                if photos
                else Interval(None, reason="no photos")
            )
        out[f"{point['method']} {point['point']}"] = row
    return out


def summary(
    result: dict[str, Any],
    resamples: int = RESAMPLES,
    seed: int = SEED,
    rates: Sequence[str] = ("bpp", "bpp_payload"),
) -> dict[str, Any]:
    """BD-rate and score intervals on all photos and on the confident subset."""
    subsets: dict[str, list[int]] = {"all": list(range(result["num_images"]))}
    confident = confident_photos(result)
    if confident is not None:
        subsets["confident"] = confident
    out: dict[str, Any] = {
        "resamples": resamples,
        "seed": seed,
        "confidence": CONFIDENCE,
        "confident_probability": CONFIDENT_PROBABILITY,
        "photos": {name: len(photos) for name, photos in subsets.items()},
        "bd_rate": {},
        "scores": {},
    }
    for name, photos in subsets.items():
        out["bd_rate"][name] = {
            rate: {
                metric: {
                    pair: iv.to_dict()
                    for pair, iv in bd_rate_intervals(
                        result, metric, rate, photos, resamples=resamples, seed=seed
                    ).items()
                }
                for metric in bootstrap_metrics(result)
            }
            for rate in rates
        }
        out["scores"][name] = {
            label: {metric: iv.to_dict() for metric, iv in row.items()}
            for label, row in score_intervals(result, photos, resamples, seed).items()
        }
    return out
