"""The metrics docs/deployment.md documents and the ones a process serves, each as
{family name: label names}, so that tests can hold the two to each other."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

DOC = Path(__file__).resolve().parents[2] / "docs" / "deployment.md"
# | `name`, `name` (what) | type | `label`, `label` | process, process |
_ROW = re.compile(
    r"^\| (?P<names>.+?) \| (?P<type>counter|gauge|histogram) \| (?P<labels>.+?)"
    r" \| (?P<by>[a-z ,]+) \|$"
)


def _family(name: str, kind: str) -> str:
    # The parser names a counter's family without the sample suffix, as Prometheus does.
    return name.removesuffix("_total") if kind == "counter" else name


def documented(process: str) -> dict[str, set[str]]:
    """What the metrics table says ``process`` ("analytics", "encoder", "stream client")
    serves."""
    found: dict[str, set[str]] = {}
    for line in DOC.read_text().splitlines():
        row = _ROW.match(line)
        if row is None or process not in [p.strip() for p in row["by"].split(",")]:
            continue
        labels = set(re.findall(r"`([a-z_]+)`", row["labels"]))
        for name in re.findall(r"`(transtic_[a-z0-9_]+)`", row["names"]):
            found[_family(name, row["type"])] = labels
    assert found, f"no metrics of {process!r} documented in {DOC}"
    return found


def served(text: str) -> dict[str, set[str]]:
    """The transtic_* families of a /metrics answer, with the labels their samples carry
    (a histogram's ``le`` aside), read by Prometheus's own text parser. The ``*_created``
    timestamps prometheus_client adds to counters and histograms, which the text format
    shows as families of their own, are left out: they belong to their metric."""
    families = list(text_string_to_metric_families(text))
    names = {family.name for family in families}
    return {
        family.name: {label for s in family.samples for label in s.labels} - {"le"}
        for family in families
        if family.name.startswith("transtic_")
        and family.name.removesuffix("_created") not in names - {family.name}
    }
