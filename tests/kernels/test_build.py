"""The kernel cache: library names that follow every source they are built from, and
signatures declared once per loaded library."""

from __future__ import annotations

import shutil

from transtic.kernels import build

KERNELS = ("window_attention", "winograd_conv")


def test_editing_the_shared_header_renames_every_kernels_library(tmp_path, monkeypatch):
    """A library built before a header changed is never found again under its name."""
    sources = tmp_path / "src"
    shutil.copytree(build.SOURCE_DIR, sources, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    monkeypatch.setattr(build, "SOURCE_DIR", sources)
    capability = build.cpu_capability()
    before = {name: build.library_name(name, capability) for name in KERNELS}
    header = sources / "vectors.h"
    header.write_text(header.read_text() + "\n// edited\n")
    after = {name: build.library_name(name, capability) for name in KERNELS}
    assert all(before[name] != after[name] for name in KERNELS)
    assert all(after[name].startswith(f"{name}-{capability.lower()}-") for name in KERNELS)


def test_kernels_include_the_shared_header():
    """Both kernels compile against vectors.h (so its hash in their names is not moot)."""
    for name in KERNELS:
        assert '#include "vectors.h"' in (build.SOURCE_DIR / f"{name}.cpp").read_text()


def test_signatures_are_declared_once_per_loaded_library(fresh_build, monkeypatch):
    calls = []

    def declare(lib):
        calls.append(lib)
        lib.transtic_winograd_lanes.restype = build.ctypes.c_int64
        return int(lib.transtic_winograd_lanes())

    first = build.load_declared("winograd_conv", declare)
    again = build.load_declared("winograd_conv", declare)
    assert first is not None and again is not None
    assert first[1] == again[1] in (4, 8, 16) and len(calls) == 1
    build.forget_loaded()  # a new library object: declared anew
    assert build.load_declared("winograd_conv", declare) is not None and len(calls) == 2


def test_no_library_no_declaration(fresh_build, monkeypatch):
    monkeypatch.setattr(build, "compiler", lambda: None)
    calls = []
    assert build.load_declared("winograd_conv", calls.append) is None
    assert calls == []
