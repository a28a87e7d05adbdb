"""The Linear layers of the Swin transforms, per MP of image: float32 against int8 kernels.

    python scripts/bench_linears.py [--max-isa avx2] [--checkpoint C] [--repeats 30] [--json F]

Tells how much of an encode and a decode the int8 path's dynamically quantised Linears
can still give back. For each Linear shape of the paper-size model it times, on chunks
of the native block pass's size (``NATIVE_CHUNK_TOKENS`` rows):

- ``float32``: oneDNN with packed weights and the bias in the GEMM, as the float32 path
  runs them;
- ``int8 dynamic``: ``quantize_linear_layers`` as the int8 path runs them (activation
  range measured and the input quantised on every call);
- ``int8, u8 input``: oneDNN's int8 GEMM on an input already quantised to uint8, float32
  out: the ceiling of any int8 Linear whose quantisation were folded into the op before
  it (LayerNorm, GELU), with the same per-tensor activation grid.

Rows per MP come from running the model's analysis and synthesis transforms once on a
small image with a row counter on every Linear (image and prompt tokens alike), so the
totals are ms per MP of image for the encoder's transforms (``g_a``, ``h_a``) and the
decoder's (``g_s``). ``--max-isa avx2`` re-runs the script in a process whose kernel
libraries are capped to AVX2 (``scripts/isa_caps.py``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_codec  # noqa: E402
from isa_caps import MAX_ISA_CHOICES, cap_variables, capped_environment  # noqa: E402

from transtic.layers.attention import inference_linear  # noqa: E402
from transtic.layers.swin import NATIVE_CHUNK_TOKENS  # noqa: E402
from transtic.models.quantization import quantize_linear_layers  # noqa: E402

ENCODER, DECODER = ("g_a", "h_a"), ("g_s",)  # the transforms the int8 path quantises
VARIANTS = ("float32", "int8 dynamic", "int8, u8 input")
COUNT_SIDE = 256


def rows_per_mp(model: nn.Module) -> dict[tuple[str, int, int], float]:
    """{(transform, in, out): rows per MP of image} over every quantised Linear."""
    rows: dict[tuple[str, int, int], float] = defaultdict(float)
    hooks = []
    for name, module in model.named_modules():
        top = name.split(".")[0]
        if isinstance(module, nn.Linear) and top.startswith(ENCODER + DECODER):
            side = "encode" if top.startswith(ENCODER) else "decode"
            key = (side, module.in_features, module.out_features)

            def count(_m: nn.Module, inputs: Any, _out: Any, key: Any = key) -> None:
                rows[key] += inputs[0].numel() / key[1]

            hooks.append(module.register_forward_hook(count))
    image = torch.rand(1, 3, COUNT_SIDE, COUNT_SIDE)
    with torch.no_grad():
        y, _ = model.analyze(image)  # type: ignore[operator]
        model.synthesize(y.round())  # type: ignore[operator]
    for hook in hooks:
        hook.remove()
    scale = 1e6 / COUNT_SIDE**2
    return {key: count * scale for key, count in rows.items()}


def seconds(fn: Callable[[], Any], repeats: int) -> float:
    for _ in range(3):
        fn()
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        best = min(best, (time.perf_counter() - start) / repeats)
    return best


def u8_input_linear(linear: nn.Linear, x: torch.Tensor) -> Callable[[], torch.Tensor] | None:
    """oneDNN's int8 GEMM on x quantised once (per-tensor uint8, per-channel int8 weights);
    None where this torch has no such op."""
    rows, k = x.shape
    n = linear.out_features
    w_scales = linear.weight.abs().amax(1).clamp_min(1e-8) / 127
    zeros = torch.zeros(n, dtype=torch.long)
    weight = torch.quantize_per_channel(linear.weight, w_scales, zeros, 0, torch.qint8)
    x_scale = float(x.abs().max()) / 127
    try:
        packed = torch.ops.onednn.qlinear_prepack(weight.int_repr(), [rows, k])
        q = torch.quantize_per_tensor(x, x_scale, 128, torch.quint8).int_repr()
        w_scales, bias = w_scales.float(), linear.bias

        def run() -> torch.Tensor:
            return torch.ops.onednn.qlinear_pointwise(
                q, x_scale, 128, packed, w_scales, zeros, bias,
                1.0, 0, torch.float32, "none", [], "",
            )  # fmt: skip

        run()
    except (AttributeError, RuntimeError):
        return None
    return run


def time_shape(k: int, n: int, repeats: int) -> dict[str, float | None]:
    """Seconds per row of each variant for a (k -> n) Linear."""
    gen = torch.Generator().manual_seed(k * 1000 + n)
    linear = nn.Linear(k, n).eval()
    x = torch.randn(NATIVE_CHUNK_TOKENS, k, generator=gen)
    dynamic = quantize_linear_layers(nn.Sequential(linear))
    u8 = u8_input_linear(linear, x)
    with torch.no_grad():
        found = {
            "float32": seconds(lambda: inference_linear(linear, x), repeats),
            "int8 dynamic": seconds(lambda: dynamic(x), repeats),
            "int8, u8 input": None if u8 is None else seconds(u8, repeats),
        }
    return {v: None if s is None else s / NATIVE_CHUNK_TOKENS for v, s in found.items()}


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    model, source = bench_codec.load_model(args.checkpoint)
    counts = rows_per_mp(model)
    shapes = sorted({(k, n) for _, k, n in counts})
    per_row = {shape: time_shape(*shape, args.repeats) for shape in shapes}
    print(f"weights: {source}; chunks of {NATIVE_CHUNK_TOKENS} rows; {args.threads} threads")
    print(f"{'in -> out':<12}" + "".join(f"{v + ' GFLOP/s':>24}" for v in VARIANTS))
    for (k, n), times in per_row.items():
        rates = ["n/a" if s is None else f"{2 * k * n / s / 1e9:.0f}" for s in times.values()]
        print(f"{f'{k} -> {n}':<12}" + "".join(f"{r:>24}" for r in rates))
    totals: dict[str, dict[str, float | None]] = {}
    for side in ("encode", "decode"):
        totals[side] = {}
        for variant in VARIANTS:
            weighted = [
                (per_row[(k, n)][variant], rows) for (s, k, n), rows in counts.items() if s == side
            ]
            known = [t * r for t, r in weighted if t is not None]
            totals[side][variant] = sum(known) * 1e3 if len(known) == len(weighted) else None
        shown = "  ".join(
            f"{v} {'n/a' if t is None else f'{t:.0f}'}" for v, t in totals[side].items()
        )
        print(f"Linear layers of the {side} transforms, ms/MP: {shown}")
    return {
        "machine": bench_codec.machine(args),
        "weights": source,
        "rows_per_mp": {f"{s} {k}->{n}": r for (s, k, n), r in counts.items()},
        "gflops": {
            f"{k}->{n}": {v: None if s is None else 2 * k * n / s / 1e9 for v, s in t.items()}
            for (k, n), t in per_row.items()
        },
        "ms_per_mp": totals,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--max-isa", choices=MAX_ISA_CHOICES, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    caps = cap_variables(args.max_isa)
    if any(os.environ.get(name) != value for name, value in caps.items()):
        # the libraries read their caps once, at load time: a new process
        env = capped_environment(args.max_isa, os.environ)
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    if caps:
        print(f"EMULATION: kernel libraries capped to {args.max_isa}: {caps}")
    report = run(args)
    if args.json:
        bench_codec.write_report(args.json, report)


if __name__ == "__main__":
    main()
