"""Regenerate the README's results table from evaluation output, so the two never drift.

    python -m transtic.evaluation.readme_table docs/eval/results.json [more.json ...] \\
        [--readme README.md] [--check]

The text between ``<!-- results:start -->`` and ``<!-- results:end -->`` is replaced
by one table per results file (methods' rate points, PSNR and task score) and its
BD-rates; everything outside the markers is kept byte for byte. ``--check`` writes
nothing and fails when the README is not what the results give.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .report import bd_matrix

START = "<!-- results:start -->"
END = "<!-- results:end -->"
_LABELS = {
    "top1_agreement": "top-1 agreement %",
    "top1_accuracy": "top-1 accuracy %",
    "mAP": "mAP %",
    "mAP_agreement": "mAP agreement %",
}


class MarkerError(ValueError):
    """The README lacks the marker pair, or has it out of order or twice."""


def _joined(values: Sequence[float | None], digits: int) -> str:
    return " / ".join("-" if v is None else f"{v:.{digits}f}" for v in values)


def results_table(result: dict[str, Any]) -> str:
    """Markdown: one row per method, its points (by rising rate) joined with ' / '."""
    metric = result["primary_metric"]
    by_method: dict[str, list[dict[str, Any]]] = {}
    for p in sorted(result["points"], key=lambda p: p["bpp"]):
        by_method.setdefault(p["method"], []).append(p)
    protocol = result.get("protocol", "native")
    label = _LABELS.get(metric, metric)
    lines = [
        f"{result['task']}, {result['num_images']} images, protocol `{protocol}`; "
        f"uncompressed {label}: {result['reference'].get(metric, 0):.1f}",
        "",
        f"| method | points | bpp (bytes) | bpp (payload) | PSNR dB | {label} |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for method, points in by_method.items():
        cells = [
            method,
            " / ".join(str(p["point"]) for p in points),
            _joined([p["bpp"] for p in points], 3),
            _joined([p.get("bpp_payload") for p in points], 3),
            _joined([p["psnr"] for p in points], 2),
            _joined([p["scores"].get(metric) for p in points], 1),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", _bd_sentence(result, metric)]
    if result.get("command"):
        lines += ["", "```", result["command"], "```"]
    return "\n".join(lines)


def _bd_sentence(result: dict[str, Any], metric: str) -> str:
    matrix = bd_matrix(result, metric)
    parts = [
        f"{test} vs {anchor} {value:+.1f} %"
        for test, row in matrix.items()
        for anchor, value in row.items()
        if isinstance(value, float)
    ]
    if not parts:
        return f"BD-rate on {metric}: no pair of curves overlaps."
    return (
        f"BD-rate on {metric} (container bytes; negative = fewer bits): " + ", ".join(parts) + "."
    )


def replace_between_markers(text: str, block: str) -> str:
    """``text`` with everything between the markers replaced by ``block``."""
    if text.count(START) != 1 or text.count(END) != 1:
        raise MarkerError(f"expected exactly one {START} and one {END}")
    head, rest = text.split(START)
    if END not in rest:
        raise MarkerError(f"{END} comes before {START}")
    _, tail = rest.split(END)
    return f"{head}{START}\n{block.strip()}\n{END}{tail}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m transtic.evaluation.readme_table",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("results", type=Path, nargs="+", help="results.json of transtic eval")
    parser.add_argument("--readme", type=Path, default=Path("README.md"))
    parser.add_argument("--check", action="store_true", help="fail if the README is stale")
    args = parser.parse_args(argv)
    try:
        tables = [results_table(json.loads(path.read_text())) for path in args.results]
        text = args.readme.read_text()
        updated = replace_between_markers(text, "\n\n".join(tables))
    except (OSError, KeyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if updated != text:
            print(f"{args.readme} is stale; rerun without --check", file=sys.stderr)
            return 1
        return 0
    if updated != text:
        args.readme.write_text(updated)
        print(f"updated {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
