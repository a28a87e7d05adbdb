"""Fixtures of the robustness tests: settings, an in-process runtime, a watchdog.

The fuzz and schema tests run thousands of requests' worth of work on two shared CPU
cores, so the task model is a constant-time stand-in (mean colour -> label); the codec is
the session's tiny random-weight TransTIC, so every valid image is really coded and decoded.
"""

from __future__ import annotations

import faulthandler
import functools
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from service_fakes import MeanColourClassifier

from services.analytics.runtime import Runtime
from services.analytics.settings import Settings

# Figures the load tests measured, shown in pytest's terminal summary (even without -s).
LOAD_REPORTS: list[tuple[str, dict[str, Any]]] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if LOAD_REPORTS:
        terminalreporter.section("load test figures")
        for name, figures in LOAD_REPORTS:
            terminalreporter.write_line(f"{name}: {json.dumps(figures, sort_keys=True)}")


@pytest.fixture(scope="module")
def robust_settings(make_analytics_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    """``robust_settings(**overrides)``: settings of an in-process service on 127.0.0.1."""
    return functools.partial(
        make_analytics_settings,
        db_synchronous="NORMAL",
        task_backends=["classification"],
        max_batch_delay_ms=1.0,
        max_upload_bytes=2_000_000,
        max_pixels=2**20,  # 1 MP: valid fuzzed images stay cheap to code
        rate_limit_per_s=0,
        request_timeout_s=30.0,
    )


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
