"""Alert rules: valid for Prometheus (promtool), behaving as intended on synthetic series
(promtool's rule unit tests, tests/deploy/alerts_test.yml), built on metrics that exist."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from metric_labels import exposed_labels, selector_labels, unknown_labels

from services.analytics.metrics import Metrics
from services.encoder.metrics import EncoderMetrics, StreamMetrics, exposed_names

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
REQUIRED_ALERTS = {
    "TransticNoFrames",
    "TransticHighErrorRatio",
    "TransticQueueSaturated",
    "TransticHighP99Latency",
    "TransticModelNotReady",
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:
        pytest.skip("promtool not installed (Debian package prometheus; scripts/setup_env.sh)")
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120)


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_accepts_config_and_rules() -> None:
    for args in (("check", "config", "prometheus.yml"), ("check", "rules", "alerts.yml")):
        done = promtool(*args[:2], str(PROMETHEUS / args[2]))
        assert done.returncode == 0, done.stdout + done.stderr


def test_alerts_fire_when_they_should_and_only_then() -> None:
    done = promtool("test", "rules", str(ROOT / "tests" / "deploy" / "alerts_test.yml"))
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_required_alert_exists_with_severity_and_summary() -> None:
    found = {rule["alert"]: rule for rule in rules()}
    assert set(found) >= REQUIRED_ALERTS
    for rule in found.values():
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_alerts_use_metrics_the_services_expose() -> None:
    known = exposed_names(Metrics().registry) | exposed_names(EncoderMetrics().registry)
    known |= exposed_names(StreamMetrics().registry)
    known.add("up")
    for rule in rules():
        names = set(re.findall(r"\b(transtic_[a-z0-9_]+|up)\b", rule["expr"]))
        assert names and names <= known, (rule["alert"], names - known)


def test_alerts_filter_and_group_only_on_labels_the_metrics_carry() -> None:
    labels = exposed_labels(Metrics(), EncoderMetrics(), StreamMetrics())
    for rule in rules():
        assert not unknown_labels(rule["expr"], labels), rule["alert"]


def test_a_per_model_alert_uses_the_model_labels() -> None:
    """Some alert tells which served model (codec, quality, task) fails, and leaves out the
    requests that resolved to no model (label value "unknown")."""
    per_model = [
        rule
        for rule in rules()
        if "by (codec, quality, task)" in rule["expr"]
        and ("transtic_analytics_errors_total", "codec") in selector_labels(rule["expr"])
    ]
    assert per_model, "no alert groups the errors by codec, quality and task"
    for rule in per_model:
        assert 'codec!="unknown"' in rule["expr"]
        assert "$labels.codec" in rule["annotations"]["summary"]
