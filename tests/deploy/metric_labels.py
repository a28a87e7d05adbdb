"""Which labels each exposed metric sample carries, and which labels a PromQL query uses:
so the alert rules and the dashboard can be checked against what the services export."""

from __future__ import annotations

import re
from typing import Any

from prometheus_client.metrics import MetricWrapperBase

# Added by Prometheus to every scraped series, or by the exposition format.
TARGET_LABELS = {"job", "instance", "le"}
_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
}
_SELECTOR = re.compile(r"\b(transtic_[a-z0-9_]+)\{([^}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def exposed_labels(*holders: Any) -> dict[str, set[str]]:
    """Sample name -> label names, for the metrics held as attributes of ``holders``."""
    found: dict[str, set[str]] = {}
    for holder in holders:
        for metric in vars(holder).values():
            if not isinstance(metric, MetricWrapperBase):
                continue
            for suffix in _SUFFIXES.get(metric._type, ("",)):
                found[f"{metric._name}{suffix}"] = set(metric._labelnames)
    return found


def selector_labels(expr: str) -> list[tuple[str, str]]:
    """(metric, label) for every label matcher inside ``metric{...}`` in ``expr``."""
    return [
        (metric, label)
        for metric, body in _SELECTOR.findall(expr)
        for label in _MATCHER.findall(body)
    ]


def grouping_labels(expr: str) -> set[str]:
    """Labels named in ``by (...)`` / ``without (...)`` clauses."""
    return {
        label.strip() for group in _GROUPING.findall(expr) for label in group.split(",") if label
    }


def unknown_labels(expr: str, labels: dict[str, set[str]]) -> set[str]:
    """Labels the query filters or groups on that none of its metrics carries."""
    metrics = set(re.findall(r"\btranstic_[a-z0-9_]+", expr))
    carried = set(TARGET_LABELS).union(*(labels.get(m, set()) for m in metrics))
    bad = {
        f"{m}{{{label}}}"
        for m, label in selector_labels(expr)
        if label not in labels.get(m, set()) | TARGET_LABELS
    }
    bad |= {label for label in grouping_labels(expr) if label not in carried}
    return bad
