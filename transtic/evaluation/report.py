"""Tables (markdown, CSV, JSON), BD-rate matrices and the rate/quality plot of an evaluation."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import bootstrap
from .bdrate import bd_rate_or_none, pareto
from .classifier_scores import LOWER_IS_BETTER

#: The two rates of every point: real container bytes, and the entropy-coded payload.
RATES = {"bpp": "container bytes", "bpp_payload": "payload"}


def _rate(point: dict[str, Any], rate: str) -> float:
    # Results written before payload rates existed only have container bytes.
    value = point.get(rate)
    return float(point["bpp"] if value is None else value)


def curves(
    result: dict[str, Any], metric: str, rate: str = "bpp"
) -> dict[str, tuple[list[float], list[float]]]:
    """method -> (rates, metric values), points sorted by rate (``bpp`` or ``bpp_payload``)."""
    out: dict[str, tuple[list[float], list[float]]] = {}
    for p in sorted(result["points"], key=lambda p: _rate(p, rate)):
        value = p["psnr"] if metric == "psnr" else p["scores"].get(metric, math.nan)
        rates, values = out.setdefault(p["method"], ([], []))
        rates.append(_rate(p, rate))
        values.append(value)
    return out


def bd_matrix(result: dict[str, Any], metric: str, rate: str = "bpp") -> dict[str, dict[str, Any]]:
    """``matrix[test][anchor]``: BD-rate (%) of test against anchor on the curves'
    Pareto fronts, or the reason there is none."""
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0  # quality must rise with rate
    data = {
        m: pareto(r, [sign * v for v in q]) for m, (r, q) in curves(result, metric, rate).items()
    }
    matrix: dict[str, dict[str, Any]] = {}
    for test, (tr, tq) in data.items():
        row: dict[str, Any] = {}
        for anchor, (ar, aq) in data.items():
            if anchor == test:
                continue
            value, why = bd_rate_or_none(ar, aq, tr, tq)
            row[anchor] = value if value is not None else f"n/a: {why}"
        matrix[test] = row
    return matrix


#: The classifier scores that move smoothly with distortion (``classifier_scores``).
SMOOTH_SCORES = ("kl_divergence", "top5_agreement", "feature_cosine")
#: Decimals of scores whose range is 0..1-ish rather than percent.
_DIGITS = {"kl_divergence": 3, "feature_cosine": 4}


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def _metrics(result: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for p in result["points"]:
        names += [k for k in p["scores"] if k not in names]
    return names


def markdown(result: dict[str, Any], command: str | None = None) -> str:
    names = _metrics(result)
    lines = [f"## {result['task']}: {result['num_images']} images", ""]
    if command:
        lines += ["```", command, "```", ""]
    ref = ", ".join(f"{k} {_fmt(v, _DIGITS.get(k, 1))}" for k, v in result["reference"].items())
    lines += [f"Uncompressed images: {ref}.", ""]
    head = ["method", "point", "bpp (bytes)", "bpp (payload)", "bpp (likelihoods)", "PSNR dB"]
    head += [*names, "colour shift R/G/B (levels)"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in sorted(result["points"], key=lambda p: (p["method"], p["bpp"])):
        row = [
            p["method"],
            p["point"],
            _fmt(p["bpp"], 4),
            _fmt(p.get("bpp_payload"), 4),
            _fmt(p.get("bpp_likelihood"), 4),
            _fmt(p["psnr"], 2),
            *(_fmt(p["scores"].get(n), _DIGITS.get(n, 1)) for n in names),
            " / ".join(f"{c:+.1f}" for c in p.get("extra", {}).get("colour_shift_rgb", [])),
        ]
        lines.append("| " + " | ".join(row) + " |")
    for rate, metric in [(r, m) for r in RATES for m in (result["primary_metric"], "psnr")]:
        matrix = bd_matrix(result, metric, rate)
        methods = list(matrix)
        lines += [
            "",
            f"BD-rate (%) on {metric}, rate from {RATES[rate]}: row method against column "
            "anchor (negative = fewer bits for the same quality; PCHIP on log-rate over "
            "each curve's Pareto front).",
            "",
            "| test \\ anchor | " + " | ".join(methods) + " |",
            "|" + "---|" * (len(methods) + 1),
        ]
        notes: list[str] = []
        for test in methods:
            cells = []
            for anchor in methods:
                value = matrix[test].get(anchor)
                if anchor == test:
                    cells.append("")
                elif isinstance(value, float):
                    cells.append(f"{value:+.1f}")
                else:
                    cells.append("n/a")
                    notes.append(f"{test} vs {anchor}: {str(value).removeprefix('n/a: ')}")
            lines.append(f"| {test} | " + " | ".join(cells) + " |")
        if notes:
            lines += ["", *(f"- {n}" for n in sorted(set(notes)))]
    if "bootstrap" in result:
        lines += ["", *intervals_markdown(result["bootstrap"])]
    return "\n".join(lines) + "\n"


def _interval_cell(entry: dict[str, Any], digits: int = 1, signed: bool = True) -> str:
    if entry["estimate"] is None:
        return "n/a"
    form = f"{'+' if signed else ''}.{digits}f"
    cell = format(entry["estimate"], form)
    if entry["low"] is None:
        return cell
    return f"{cell} [{format(entry['low'], form)}, {format(entry['high'], form)}]"


def intervals_markdown(summary: dict[str, Any]) -> list[str]:
    """BD-rates with their paired bootstrap intervals, on all photos and the confident."""
    lines = [
        f"### Paired bootstrap {summary['confidence']:.0%} intervals over photos "
        f"({summary['resamples']} resamples, seed {summary['seed']})",
        "",
        "BD-rate (%) of the first method against the second, `estimate [low, high]`; "
        "every method's curve is recomputed on the same resampled photos. "
        f"`confident`: photos whose reference top-1 probability is >= "
        f"{summary['confident_probability']}.",
    ]
    for subset, by_rate in summary["bd_rate"].items():
        for rate, by_metric in by_rate.items():
            metrics = list(by_metric)
            pairs = list(next(iter(by_metric.values()), {}))
            if not pairs:
                continue
            lines += [
                "",
                f"{subset} ({summary['photos'][subset]} photos), rate from {RATES[rate]}:",
                "",
                "| pair | " + " | ".join(metrics) + " |",
                "|" + "---|" * (len(metrics) + 1),
            ]
            for pair in pairs:
                cells = [_interval_cell(by_metric[m][pair]) for m in metrics]
                lines.append(f"| {pair} | " + " | ".join(cells) + " |")
    confident = summary["scores"].get("confident")
    if confident:
        lines += ["", *_subset_scores(confident, summary["photos"]["confident"])]
    return lines


def _subset_scores(scores: dict[str, dict[str, Any]], photos: int) -> list[str]:
    names = [n for n in next(iter(scores.values())) if n != "bpp_likelihood"]
    lines = [
        f"Scores on the confident photos ({photos}), mean [95 % interval]:",
        "",
        "| point | " + " | ".join(names) + " |",
        "|" + "---|" * (len(names) + 1),
    ]
    for label, row in scores.items():
        cells = []
        for n in names:
            entry = row.get(n)
            digits = 4 if n.startswith("bpp") else _DIGITS.get(n, 1)
            cells.append("-" if entry is None else _interval_cell(entry, digits, signed=False))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def write_csv(result: dict[str, Any], path: Path) -> None:
    names = _metrics(result)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "point", "bpp", "bpp_payload", "bpp_likelihood", "psnr", *names])
        for p in result["points"]:
            writer.writerow(
                [
                    p["method"],
                    p["point"],
                    p["bpp"],
                    p.get("bpp_payload"),
                    p.get("bpp_likelihood"),
                    p["psnr"],
                    *(p["scores"].get(n) for n in names),
                ]
            )


def plot(result: dict[str, Any], path: Path, metrics: Sequence[str] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(metrics or [result["primary_metric"], "psnr"])
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for method, (rates, values) in curves(result, metric).items():
            ax.plot(rates, values, marker="o", label=method)
        if metric in result["reference"]:
            ax.axhline(
                result["reference"][metric], color="gray", ls="--", lw=1, label="uncompressed"
            )
        ax.set_xlabel("bits per pixel (container bytes)")
        ax.set_ylabel("PSNR (dB)" if metric == "psnr" else metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{result['task']} on {result['num_images']} images")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_all(
    result: dict[str, Any],
    out_dir: Path,
    command: str | None = None,
    resamples: int = bootstrap.RESAMPLES,
    seed: int = bootstrap.SEED,
) -> dict[str, Path]:
    """Every output file; ``resamples`` 0 leaves the bootstrap intervals out."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = (result["primary_metric"], "psnr")
    result = {
        **result,
        "bd_rate": {m: bd_matrix(result, m) for m in metrics},
        "bd_rate_payload": {m: bd_matrix(result, m, "bpp_payload") for m in metrics},
    }
    if resamples > 0:
        result["bootstrap"] = bootstrap.summary(result, resamples, seed)
    if command:
        result["command"] = command
    paths = {
        "json": out_dir / "results.json",
        "csv": out_dir / "results.csv",
        "markdown": out_dir / "results.md",
        "plot": out_dir / "curves.png",
        "rate_accuracy": out_dir / "rate_accuracy.png",
        "rate_psnr": out_dir / "rate_psnr.png",
    }
    smooth = [m for m in SMOOTH_SCORES if m in result["reference"]]
    if smooth:
        paths["rate_smooth_scores"] = out_dir / "rate_smooth_scores.png"
    paths["json"].write_text(json.dumps(result, indent=2, default=float) + "\n")
    write_csv(result, paths["csv"])
    paths["markdown"].write_text(markdown(result, command))
    plot(result, paths["plot"])
    plot(result, paths["rate_accuracy"], [result["primary_metric"]])
    plot(result, paths["rate_psnr"], ["psnr"])
    if smooth:
        plot(result, paths["rate_smooth_scores"], smooth)
    return paths
