"""Emulate a CPU with fewer instruction sets by capping every kernel library a process uses.

A benchmark for AVX2-only machines can run on an AVX-512 one if each library is told
to stop at AVX2 before it starts: ATen's vectorised kernels, oneDNN (convs, fused
linears, bf16), MKL (float32 GEMMs) and FBGEMM (int8 GEMMs) each read their own
variable once, at load time. So the caps go into the environment of a *new* process;
setting them in a running one changes nothing. The chip's own flags (/proc/cpuinfo) stay
as they are, which is why the library reads back what ATen and oneDNN report
(``transtic.precision.kernel_support``) instead of trusting the flags alone.

``python scripts/isa_caps.py [--max-isa avx2]`` prints, as JSON, what a process started
with those caps sees: ATen's capability, oneDNN's ISA and the kernel it picks for a
float32 conv (from ONEDNN_VERBOSE), whether oneDNN offers bf16, the measured cost of a
bf16 matmul against float32, and what ``precision="auto"`` picks there.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from typing import Any

# Values each library documents for "use nothing beyond AVX2 (+FMA)".
ISA_CAPS: dict[str, dict[str, str]] = {
    "avx2": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2",
    },
}
# "native": a process of its own, with every library free to use what the chip has.
MAX_ISA_CHOICES = ("native", *ISA_CAPS)


def cap_variables(max_isa: str | None) -> dict[str, str]:
    """The environment variables that cap the libraries to ``max_isa`` (none for native)."""
    if max_isa in (None, "native"):
        return {}
    try:
        return dict(ISA_CAPS[max_isa])
    except KeyError:
        raise ValueError(f"max_isa must be one of {', '.join(MAX_ISA_CHOICES)}") from None


def capped_environment(max_isa: str | None, base: Mapping[str, str]) -> dict[str, str]:
    """``base`` with the caps of ``max_isa``; a native run also drops caps ``base`` carries."""
    every_cap = {name for caps in ISA_CAPS.values() for name in caps}
    env = {k: v for k, v in base.items() if k not in every_cap}
    env.update(cap_variables(max_isa))
    return env


@contextlib.contextmanager
def process_environment(env: Mapping[str, str]) -> Iterator[None]:
    """Make ``env`` this process's environment while children are started, then restore it.

    multiprocessing's spawn start method hands the child the parent's environment, so
    this is how a child gets caps that the parent itself does not run under.
    """
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def kernel_report() -> dict[str, Any]:
    """What this process's libraries use, and what ``precision="auto"`` picks here."""
    from transtic.precision import capped_isa_note, kernel_support, resolve_precision

    kernels = kernel_support()
    return {
        "caps": {k: os.environ[k] for name in ISA_CAPS for k in ISA_CAPS[name] if k in os.environ},
        "aten_capability": kernels.aten_capability,
        "onednn_bf16": kernels.onednn_bf16,
        "capped_note": capped_isa_note(),
        "auto_precision": resolve_precision("auto", "cpu").precision,
        "auto_precision_lossy_allowed": resolve_precision("auto", "cpu", allow_int8=True).precision,
    }


def _onednn_fields(verbose: str) -> dict[str, str]:
    """oneDNN's ISA line and the implementation of the first convolution it ran."""
    found: dict[str, str] = {}
    for line in verbose.splitlines():
        fields = line.split(",")
        if len(fields) > 4 and fields[2:4] == ["info", "cpu"] and fields[4].startswith("isa:"):
            found.setdefault("onednn_isa", fields[4].removeprefix("isa:"))
        if len(fields) > 6 and fields[3] == "exec" and fields[5] == "convolution":
            found.setdefault("onednn_conv_impl", fields[6])
    return found


def _probe_here() -> dict[str, Any]:
    import torch

    from transtic.precision import bf16_slowdown

    conv = torch.nn.Conv2d(32, 32, 3, padding=1)  # big enough for oneDNN
    with torch.no_grad():
        conv(torch.rand(1, 32, 64, 64))
    report = kernel_report()
    # best of 7: on a shared 2-core machine single float32 runs jump 50x when a thread waits
    report["bf16_matmul_slowdown"] = round(bf16_slowdown(size=512, repeats=7), 2)
    return report


def probe(max_isa: str | None, timeout_s: float = 300) -> dict[str, Any]:
    """Start a process with ``max_isa``'s caps and report what its libraries use there."""
    env = capped_environment(max_isa, os.environ)
    env["ONEDNN_VERBOSE"] = "1"
    done = subprocess.run(
        [sys.executable, __file__, "--here"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=True,
    )
    lines = done.stdout.strip().splitlines()
    report: dict[str, Any] = json.loads(lines[-1])
    report.update(_onednn_fields("\n".join(lines[:-1])))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-isa", choices=MAX_ISA_CHOICES, default="native")
    parser.add_argument("--here", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.here:  # the probed process itself: one JSON line after oneDNN's verbose lines
        print(json.dumps(_probe_here()), flush=True)
        return
    print(json.dumps(probe(args.max_isa), indent=2))


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
