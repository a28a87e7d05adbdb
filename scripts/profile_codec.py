"""Where encode and decode time goes, layer by layer, against each layer's FLOPs.

For the paper-size model on a 768x512 photo: wall time of every top-level stage
(prompt generator, Swin stages, convs, hyper transforms, entropy coding) measured with
forward hooks, its GFLOP (torch.utils.flop_counter) and the GFLOP/s it reaches, plus
torch.profiler's top operators. A stage far below the machine's matmul rate costs more
than its FLOPs. Usage:

    python scripts/profile_codec.py [--precision float32] [--repeats 2] [--markdown]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_codec import load_model, test_image  # noqa: E402

from transtic.codec import ImageCodec  # noqa: E402
from transtic.layers import set_fused_inference  # noqa: E402
from transtic.layers.prompt_generator import WinogradConv3x3  # noqa: E402

STAGES = ("g_a", "h_a", "h_s", "g_s")


def stage_modules(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(stage name, module) of every top-level stage; the members of a ModuleList stage
    (e.g. the instance-prompt convs), which is never called itself, under its name."""
    found = []
    for name, module in model.named_children():
        if name.startswith(STAGES):
            members = module if isinstance(module, torch.nn.ModuleList) else [module]
            found += [(name, member) for member in members]
    return found


def add_timing_hooks(model: torch.nn.Module, times: dict[str, list[float]]) -> None:
    for name, module in stage_modules(model):
        starts: list[float] = []

        def pre(_m, _i, starts=starts):  # type: ignore[no-untyped-def]
            starts.append(time.perf_counter())

        def post(_m, _i, _o, name=name, starts=starts):  # type: ignore[no-untyped-def]
            times[name].append(time.perf_counter() - starts.pop())

        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)


def stage_flops(codec: ImageCodec, image: torch.Tensor) -> dict[str, float]:
    """FLOPs of one encode + decode per stage, each stage counted by its own counter.

    Counted on a copy running the reference operators: torch's FLOP counter does not see
    inside the fused oneDNN linears or the native attention kernel of the fast path.
    """
    fast = codec._transforms
    reference = copy.deepcopy(fast)
    set_fused_inference(reference, False)
    reference.set_attention_impl("eager")
    for module in reference.modules():
        if isinstance(module, WinogradConv3x3):  # PyTorch's conv, which the counter sees
            module._native = lambda _x: False  # type: ignore[method-assign,assignment]
    codec._transforms = reference
    try:
        return _count_stage_flops(codec, image)
    finally:
        codec._transforms = fast


def _count_stage_flops(codec: ImageCodec, image: torch.Tensor) -> dict[str, float]:
    flops: dict[str, float] = defaultdict(float)
    handles = []
    for name, module in stage_modules(codec._transforms):
        counters: list[FlopCounterMode] = []

        def pre(_m, _i, counters=counters):  # type: ignore[no-untyped-def]
            counters.append(FlopCounterMode(display=False))
            counters[-1].__enter__()

        def post(_m, _i, _o, name=name, counters=counters):  # type: ignore[no-untyped-def]
            counter = counters.pop()
            counter.__exit__(None, None, None)
            flops[name] += counter.get_total_flops()

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    codec.decode(codec.encode(image).data)
    for handle in handles:
        handle.remove()
    return dict(flops)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = parser.parse_args()
    model, _ = load_model(args.checkpoint)
    image = test_image()
    codec = ImageCodec(model, precision=args.precision)
    megapixels = image.shape[1] * image.shape[2] / 1e6
    flops = stage_flops(codec, image)
    times: dict[str, list[float]] = defaultdict(list)
    add_timing_hooks(codec._transforms, times)
    if codec._transforms is not codec.model:
        add_timing_hooks(codec.model, times)
    codec.decode(codec.encode(image).data)  # warm-up
    times.clear()
    coding: dict[str, list[float]] = defaultdict(list)
    for _ in range(args.repeats):
        encoded = codec.encode(image)
        decoded = codec.decode(encoded.data)
        for stage, ms in (encoded.timings | decoded.timings).items():
            coding[stage].append(ms / 1e3)
    sep = " | " if args.markdown else "  "
    print(sep.join(["stage", "ms/MP", "GFLOP/MP", "GFLOP/s"]))
    if args.markdown:
        print("|".join(["---"] * 4))
    total = 0.0
    for name in sorted(times, key=lambda n: (STAGES.index(n[:3]), n)):
        seconds = statistics.median(times[name]) * (len(times[name]) // args.repeats)
        gflop = flops.get(name, 0.0) / 1e9
        total += seconds
        rate = f"{gflop / seconds:.0f}" if gflop else "-"
        print(
            sep.join([name, f"{seconds * 1e3 / megapixels:.0f}", f"{gflop / megapixels:.1f}", rate])
        )
    for stage in ("entropy_encode", "entropy_decode", "pack", "parse"):
        if stage in coding:
            ms = statistics.median(coding[stage]) * 1e3 / megapixels
            print(sep.join([stage, f"{ms:.0f}", "-", "-"]))
    print(
        f"encode+decode transforms: {total * 1e3 / megapixels:.0f} ms/MP, "
        f"{sum(flops.values()) / 1e9 / megapixels:.0f} GFLOP/MP"
    )
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        codec.decode(codec.encode(image).data)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))


if __name__ == "__main__":
    main()
