"""Compile the bundled C++ kernels on first use and cache the shared libraries.

A kernel is built once per (source, flags, instruction set) into a cache directory and
loaded with ctypes: no PyTorch headers, so a build takes about a second. Without a C++
compiler nothing is built and callers keep PyTorch's operators, so a compiler is an
accelerator, never a requirement; images without one ship kernels built in advance
(``python -m transtic.kernels build --cache-dir DIR --isa AVX512 AVX2 DEFAULT``).

The instruction set follows the CPU capability PyTorch dispatches its own kernels on
(``torch.backends.cpu.get_cpu_capability()``), so a process capped to AVX2 gets AVX2
kernels too, and a library built on one machine is never loaded on a CPU without its
instructions (the capability is part of the file name).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

log = logging.getLogger(__name__)

SOURCE_DIR = Path(__file__).resolve().parent
# -O3 vectorises the fixed-size loops; -fno-math-errno lets the compiler keep float math
# in registers. No -ffast-math: it would link code that changes the whole process's
# denormal handling.
BASE_FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-fno-math-errno", "-ffp-contract=fast")
ISA_FLAGS: dict[str, tuple[str, ...]] = {
    "AVX512": ("-mavx512f", "-mavx512vl", "-mavx512bw", "-mavx512dq", "-mavx2", "-mfma"),
    "AVX2": ("-mavx2", "-mfma"),
}
BUILD_TIMEOUT_S = 180


def openmp_flags() -> tuple[str, ...]:
    """``-fopenmp`` where PyTorch runs on the system's GNU OpenMP (``libgomp.so.1``): the
    kernel then joins the runtime already loaded, one set of worker threads for both.
    Beside another runtime (LLVM's, Intel's, a renamed libgomp) a second one would fight
    it for the cores, so the kernel is built without and runs its own threads."""
    if "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return ()
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return ()
    loaded = {line.rsplit("/", 1)[-1] for line in maps.splitlines() if "/" in line}
    return ("-fopenmp",) if any(n.startswith("libgomp.so.1") for n in loaded) else ()


def compile_flags(capability: str) -> tuple[str, ...]:
    return (*BASE_FLAGS, *ISA_FLAGS.get(capability, ()), *openmp_flags())


_lock = threading.Lock()
_loaded: dict[str, ctypes.CDLL | None] = {}
_declared: dict[int, tuple[ctypes.CDLL, Any]] = {}
Traits = TypeVar("Traits")
_cache_dir: Path | None = None


class KernelBuildError(RuntimeError):
    """A kernel could not be compiled or loaded (the message says why)."""


def set_cache_dir(path: str | Path | None) -> None:
    """Where built kernels are kept (None: ``~/.cache/transtic/kernels``)."""
    global _cache_dir
    _cache_dir = Path(path) if path is not None else None


def cpu_capability() -> str:
    """PyTorch's CPU dispatch level: "AVX512", "AVX2" or something without x86 flags."""
    return str(torch.backends.cpu.get_cpu_capability())


def compiler() -> str | None:
    for name in ("c++", "g++", "clang++"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _flag_choices(capability: str) -> list[tuple[str, ...]]:
    """The flags to try in order: with OpenMP where it applies, then without (a compiler
    without OpenMP support, e.g. clang without libomp, still builds the kernel)."""
    plain = (*BASE_FLAGS, *ISA_FLAGS.get(capability, ()))
    preferred = compile_flags(capability)
    return [preferred] if preferred == plain else [preferred, plain]


def _trusted_dir(path: Path, *, create: bool) -> bool:
    """Code is loaded only from a directory owned by this user or root that nobody else
    may write to (the rule sudo applies to its files)."""
    try:
        if create:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.stat()
    except OSError:
        return False
    return info.st_uid in (os.getuid(), 0) and not info.st_mode & 0o022


def _cache_directories() -> list[Path]:
    if _cache_dir is not None:
        return [_cache_dir]
    return [
        Path.home() / ".cache" / "transtic" / "kernels",
        Path(tempfile.gettempdir()) / f"transtic-kernels-{os.getuid()}",
    ]


def library_name(name: str, capability: str, flags: tuple[str, ...] | None = None) -> str:
    """File name of a built kernel: the source, the shared headers, the flags (default:
    the preferred ones) and the instruction set."""
    parts = [(SOURCE_DIR / f"{name}.cpp").read_text()]
    # every header, not only those the source includes: a library built before a header
    # changed must never be loaded, and finding the includes would mean parsing C++
    parts += [header.read_text() for header in sorted(SOURCE_DIR.glob("*.h"))]
    flags = compile_flags(capability) if flags is None else flags
    parts.append(" ".join(flags))
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]
    return f"{name}-{capability.lower()}-{digest}.so"


def build(name: str, capability: str | None = None) -> Path:
    """The shared library of ``<name>.cpp`` for ``capability`` (default: this CPU's),
    from the cache or compiled into it."""
    capability = capability or cpu_capability()
    choices = _flag_choices(capability)
    for flags in choices:
        file_name = library_name(name, capability, flags)
        for directory in _cache_directories():
            if (directory / file_name).is_file() and _trusted_dir(directory, create=False):
                return directory / file_name
    cxx = compiler()
    if cxx is None:
        raise KernelBuildError("no C++ compiler (c++, g++ or clang++) on PATH")
    writable = [d for d in _cache_directories() if _trusted_dir(d, create=True)]
    if not writable:
        raise KernelBuildError("no private, writable directory for compiled kernels")
    failures = []
    for flags in choices:
        try:
            return _compile(cxx, name, flags, writable[0] / library_name(name, capability, flags))
        except KernelBuildError as exc:
            failures.append(exc)
            log.info("building kernel %s with %s failed: %s", name, " ".join(flags), exc)
    raise failures[0]


def _compile(cxx: str, name: str, flags: tuple[str, ...], target: Path) -> Path:
    source = SOURCE_DIR / f"{name}.cpp"
    fd, partial = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run(
            [cxx, *flags, str(source), "-o", partial],
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
        )
        if done.returncode != 0:
            raise KernelBuildError(f"{cxx} failed on {source.name}: {done.stderr[-2000:]}")
        os.replace(partial, target)  # atomic: concurrent builders agree on one file
    except (OSError, subprocess.SubprocessError) as exc:
        raise KernelBuildError(f"building {source.name} failed: {exc}") from exc
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    log.info("built kernel %s with %s", target.name, cxx)
    return target


def load(name: str) -> ctypes.CDLL | None:
    """The kernel library, built if needed; None (logged once) where it cannot be."""
    key = f"{name}:{cpu_capability()}"
    with _lock:
        if key not in _loaded:
            try:
                _loaded[key] = ctypes.CDLL(str(build(name)))
            except (KernelBuildError, OSError) as exc:
                log.warning("native kernel %s unavailable, using PyTorch's: %s", name, exc)
                _loaded[key] = None
        return _loaded[key]


def load_declared(
    name: str, declare: Callable[[ctypes.CDLL], Traits]
) -> tuple[ctypes.CDLL, Traits] | None:
    """:func:`load` plus what ``declare`` makes of the library: it sets the functions'
    signatures and reads the library's traits (vector width, limits, OpenMP), once per
    loaded library; None where the kernel cannot be loaded."""
    lib = load(name)
    if lib is None:
        return None
    with _lock:
        # the entry keeps the library object alive, so its id is never reused
        entry = _declared.get(id(lib))
        if entry is None:
            entry = _declared[id(lib)] = (lib, declare(lib))
        return entry


def forget_loaded() -> None:
    """Drop the in-process cache of load results (tests switch compilers and dirs)."""
    with _lock:
        _loaded.clear()
