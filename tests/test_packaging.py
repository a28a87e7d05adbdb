"""The wheel holds the library, both services, their generated gRPC stubs, the web page
and the client SDK; the extras are split by role."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_contents(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--quiet", "-w", str(tmp_path), str(REPO)],
        check=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("transtic-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in (
        "transtic/client/__init__.py",
        "transtic/weights/data/transtic_small_cls_q3.pth.tar",
        "transtic/kernels/window_attention.cpp",
        "transtic/kernels/winograd_conv.cpp",
        "transtic/kernels/vectors.h",
        "services/encoder/server.py",
        "services/analytics/rest.py",
        "services/analytics/routes/inference.py",
        "services/analytics/static/index.html",
        "services/analytics/static/app.js",
        "services/generated/transtic/v1/api_pb2.py",
        "services/generated/transtic/v1/api_pb2_grpc.py",
    ):
        assert expected in names, expected
    assert not any(name.startswith("tests/") for name in names)


def test_extras_are_split_by_role() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert {"encoder", "analytics", "eval", "client", "services", "dev"} <= set(extras)
    # scripts/setup_env.sh installs .[services,dev]: services must still bring everything.
    assert extras["services"] == ["transtic[encoder,analytics,client]"]
    assert any(dep.startswith("fastapi") for dep in extras["analytics"])
    assert not any(dep.startswith("fastapi") for dep in extras["encoder"] + extras["client"])
    assert any(dep.startswith("httpx") for dep in extras["client"])
