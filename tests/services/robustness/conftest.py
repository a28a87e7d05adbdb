"""Fixtures of the robustness tests: a cheap task backend, an in-process runtime, a watchdog.

The fuzz and schema tests run thousands of requests' worth of work on two shared CPU
cores, so the task model is a constant-time stand-in (mean colour -> label); the codec is
the session's tiny random-weight TransTIC, so every valid image is really coded and decoded.
"""

from __future__ import annotations

import faulthandler
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from services.analytics.runtime import Runtime
from services.analytics.settings import ENV_PREFIX, Settings
from transtic.tasks import Normalization, TaskBackend, TaskName

COLOURS = ("red", "green", "blue")
# Figures the load tests measured, shown in pytest's terminal summary (even without -s).
LOAD_REPORTS: list[tuple[str, dict[str, Any]]] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if LOAD_REPORTS:
        terminalreporter.section("load test figures")
        for name, figures in LOAD_REPORTS:
            terminalreporter.write_line(f"{name}: {json.dumps(figures, sort_keys=True)}")


class MeanColourClassifier(TaskBackend):
    """Labels an image by its dominant mean channel: constant work, no weights."""

    name: ClassVar[str] = "mean_colour"
    task: ClassVar[TaskName] = "classification"

    @property
    def required_weights(self) -> list[str]:
        return []

    @property
    def normalization(self) -> Normalization:
        return Normalization(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), resize="internal")

    def _load(self) -> None:
        pass

    def _predict(self, images: list[torch.Tensor]) -> list[dict[str, Any]]:
        out = []
        for image in images:
            means = image.float().mean(dim=(-2, -1))
            index = int(means.argmax())
            out.append({"predictions": [{"label": COLOURS[index], "index": index, "score": 1.0}]})
        return out


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Settings read the environment: a developer's exports must not leak into tests.
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def robust_settings(
    codec_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., Settings]:
    """``robust_settings(**overrides)``: settings of an in-process service on 127.0.0.1."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "codec_checkpoint": str(codec_checkpoint),
            "host": "127.0.0.1",
            "grpc_port": 0,
            "http_port": 0,
            "device": "cpu",
            "db_path": tmp_path_factory.mktemp("db") / "frames.db",
            "db_synchronous": "NORMAL",
            "weights_cache_dir": tmp_path_factory.mktemp("weights"),
            "task_backends": ["classification"],
            "max_batch_delay_ms": 1.0,
            "max_upload_bytes": 2_000_000,
            "max_pixels": 2**20,  # 1 MP: valid fuzzed images stay cheap to code
            "rate_limit_per_s": 0,
            "request_timeout_s": 30.0,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture(scope="module")
def runtime(robust_settings: Callable[..., Settings]) -> Iterator[Runtime]:
    """A started runtime with the tiny codec and the constant-time classifier."""
    rt = Runtime(robust_settings(), backends=[MeanColourClassifier()])
    rt.start()
    assert rt.ready, rt.hub.codec_problems
    try:
        yield rt
    finally:
        rt.close()


@contextmanager
def watchdog(seconds: float) -> Iterator[None]:
    """Abort the whole test process (with every thread's stack) if the block hangs.

    Hypothesis deadlines only measure an example after it returns; a decoder stuck in C
    code never returns, so a hang must end the run rather than wedge it.
    """
    faulthandler.dump_traceback_later(seconds, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
