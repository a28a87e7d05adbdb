"""Which number format the transforms run in, chosen by what the hardware does natively.

bf16 halves memory traffic and doubles the math rate only where the hardware has bf16
instructions (x86 AVX-512-BF16 or AMX, ARM's BF16 extension, CUDA capability >= 8.0).
Everywhere else PyTorch emulates it and bf16 runs several times *slower* than float32,
so ``auto`` picks bf16 only on such hardware and float32 otherwise.

``int8`` (dynamically quantised Linear layers in the analysis and synthesis transforms)
is lossy beyond bf16's rounding; ``auto`` picks it only when the caller allows lossy
speed modes (``allow_int8=True``) and the CPU has the VNNI instructions that make it pay.

The CPU flags say what the chip can do; the kernel libraries can be told to use less
(``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA``, e.g. to emulate an AVX2-only machine).
Such a cap is read back from what torch and oneDNN report (``kernel_support``), never
from the environment, and the capped-away instruction sets count as absent.
"""

from __future__ import annotations

import functools
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

log = logging.getLogger(__name__)

Precision = Literal["auto", "float32", "bfloat16", "int8"]
ResolvedPrecision = Literal["float32", "bfloat16", "int8"]
PRECISIONS: tuple[str, ...] = ("auto", "float32", "bfloat16", "int8")

# /proc/cpuinfo flags (x86 "flags", ARM "Features") that mean native bf16 arithmetic.
NATIVE_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
# int8 dot products in one instruction; without them int8 GEMMs barely beat float32.
NATIVE_INT8_CPU_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"})
MIN_CUDA_BF16_CAPABILITY = (8, 0)


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags the kernel reports (empty where /proc/cpuinfo is absent)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


@dataclass(frozen=True)
class KernelSupport:
    """What this process's kernel libraries will use, whatever the chip offers."""

    aten_capability: str  # ATen's vectorised kernels: "AVX512", "AVX2", "DEFAULT", "SVE256", …
    onednn_bf16: bool  # oneDNN runs bf16 (x86: AVX-512 or better allowed; ARM: bf16 ext.)


@functools.lru_cache(maxsize=1)
def kernel_support() -> KernelSupport:
    """Read back what ATen and oneDNN chose in this process (caps included)."""
    try:
        onednn_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        onednn_bf16 = False
    return KernelSupport(torch.backends.cpu.get_cpu_capability(), onednn_bf16)


def usable_cpu_flags() -> frozenset[str]:
    """``cpu_flags()`` less the instruction sets the kernel libraries are capped below.

    ATen below AVX512 on an AVX-512 chip means its AVX-512 family (VNNI and BF16
    included) is unused; oneDNN without bf16 means bf16 would be emulated.
    """
    flags = cpu_flags()
    kernels = kernel_support()
    if "avx512f" in flags and kernels.aten_capability != "AVX512":
        flags = frozenset(f for f in flags if not f.startswith(("avx512", "amx")))
    if not kernels.onednn_bf16:
        flags = flags - NATIVE_BF16_CPU_FLAGS
    return flags


def capped_isa_note() -> str:
    """Why a native instruction set of the chip is not used here ('' when nothing is)."""
    lost = (cpu_flags() - usable_cpu_flags()) & (NATIVE_BF16_CPU_FLAGS | NATIVE_INT8_CPU_FLAGS)
    if not lost:
        return ""
    kernels = kernel_support()
    return (
        f"kernel libraries capped below {'/'.join(sorted(lost))} "
        f"(ATen {kernels.aten_capability}, oneDNN bf16 {'on' if kernels.onednn_bf16 else 'off'})"
    )


def cuda_capability(device: torch.device) -> tuple[int, int]:
    return tuple(torch.cuda.get_device_capability(device))  # type: ignore[return-value]


def native_bf16(device: torch.device) -> bool:
    """True where bf16 math runs in hardware on ``device``."""
    if device.type == "cuda":
        return cuda_capability(device) >= MIN_CUDA_BF16_CAPABILITY
    if device.type == "cpu":
        return bool(usable_cpu_flags() & NATIVE_BF16_CPU_FLAGS)
    return False


def native_int8(device: torch.device) -> bool:
    return device.type == "cpu" and bool(usable_cpu_flags() & NATIVE_INT8_CPU_FLAGS)


@dataclass(frozen=True)
class PrecisionChoice:
    requested: str
    precision: ResolvedPrecision
    reason: str


def resolve_precision(
    requested: str, device: torch.device | str = "cpu", *, allow_int8: bool = False
) -> PrecisionChoice:
    """Turn ``auto`` into a concrete precision for ``device``; unknown names raise ValueError."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {requested!r}")
    device = torch.device(device)
    if requested != "auto":
        if requested == "int8" and device.type != "cpu":
            raise ValueError("precision 'int8' runs on CPUs only (quantised CPU kernels)")
        if requested == "bfloat16" and not native_bf16(device):
            warn_emulated_bf16(device)
        return PrecisionChoice(requested, requested, "requested")  # type: ignore[arg-type]
    if allow_int8 and native_int8(device):
        return PrecisionChoice("auto", "int8", "lossy speed allowed and CPU has int8 dot products")
    if native_bf16(device):
        return PrecisionChoice("auto", "bfloat16", f"{device.type} has native bf16")
    capped = capped_isa_note() if device.type == "cpu" else ""
    reason = f"{capped}: bf16 would be emulated" if capped else f"{device.type} has no native bf16"
    return PrecisionChoice("auto", "float32", reason)


def log_choice(choice: PrecisionChoice, what: str) -> None:
    log.info(
        "%s: precision %s (requested %s: %s)",
        what,
        choice.precision,
        choice.requested,
        choice.reason,
    )


def bf16_slowdown(size: int = 256, repeats: int = 3) -> float:
    """Measured time of a bf16 matmul over a float32 one on this CPU (> 1: bf16 is slower)."""
    a = torch.randn(size, size)

    def best(x: torch.Tensor) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(x, x)
            times.append(time.perf_counter() - start)
        return min(times)

    best(a)
    b = a.bfloat16()
    best(b)
    return best(b) / max(best(a), 1e-9)


_warned: set[str] = set()


def warn_emulated_bf16(device: torch.device) -> None:
    """Warn once per device type that bf16 is emulated here, with its measured cost."""
    if device.type in _warned:
        return
    _warned.add(device.type)
    cost = ""
    if device.type == "cpu":
        ratio = bf16_slowdown()
        verdict = f"{ratio:.1f}x slower" if ratio >= 1 else f"{1 / ratio:.1f}x faster"
        cost = f"; a 256x256 bf16 matmul measured {verdict} than in float32"
    message = (
        f"precision='bfloat16' on a {device.type} without native bf16: it is emulated and "
        f"usually slower than float32{cost}. Use precision='auto' or 'float32'."
    )
    log.warning(message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)
