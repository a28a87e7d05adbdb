"""scripts/gpu_check.sh cannot rot: its CPU-only parts run here on a tiny model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_cpu_smoke(tmp_path):
    out = tmp_path / "check"
    done = subprocess.run(
        ["bash", str(REPO / "scripts/gpu_check.sh"), "--cpu-smoke", "--out", str(out)],
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["mode"] == "cpu-smoke"
    assert {name: s["status"] for name, s in report["steps"].items()} == {
        "codec_speed": "ok",
        "gpu_tests": "ok",
    }
    paths = {row["path"] for row in report["codec_speed"]["rows"]}
    assert {"codec float32", "codec bfloat16", "transforms float32"} <= paths
    assert report["codec_speed"]["auto_precision"] in ("float32", "bfloat16")
    assert "summary (cpu-smoke)" in done.stdout
