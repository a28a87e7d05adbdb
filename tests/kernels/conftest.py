"""Fixtures shared by the native kernels' tests."""

from __future__ import annotations

import pytest

from transtic.kernels import build


@pytest.fixture
def fresh_build(tmp_path):
    """Builds into an empty cache directory; restores the shared state afterwards."""
    build.set_cache_dir(tmp_path / "kernels")
    build.forget_loaded()
    yield tmp_path / "kernels"
    build.set_cache_dir(None)
    build.forget_loaded()
