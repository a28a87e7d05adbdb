"""The int8 fast path against float32 and against int8 with float32 convs, in one run each.

    python scripts/bench_int8.py speed [--official-src DIR] [--repeats 3] [--json F]
    python scripts/bench_int8.py agreement --data var/corpus/val [--json F]

``speed``: bench_codec.py's set-up (paper-size model, 768x512 photo, interleaved rounds,
the official code in its own process when ``--official-src`` is given) for three paths
of ours: float32, ``int8 (Linear only)`` — the int8 path before its convolutions were
quantised: dynamic int8 Linear layers, float32 convs and prompt generator — and int8.

``agreement``: the shipped classification codecs (``transtic_small_cls_q1..q3``) on a
photo folder, prepared as the paper evaluates classification (256x256 views): bpp,
PSNR and top-1 agreement with the classifier on the uncompressed view, per path, and
the BD-rates of each int8 variant against float32 (on agreement and on PSNR).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_codec  # noqa: E402

from transtic.layers import InstancePromptGenerator  # noqa: E402
from transtic.models import HyperpriorCodec  # noqa: E402
from transtic.models.quantization import quantize_linear_layers  # noqa: E402

LINEAR_ONLY = "int8 (Linear only)"
PATHS = (("ours float32 (exact)", "float32"), (LINEAR_ONLY, "int8"), ("ours int8", "int8"))


def _linear_only(fast: HyperpriorCodec, **_options: object) -> None:
    """What ``fast_transforms("int8")`` did before the convs: BN folded, Linear dynamic."""
    for name, child in fast.named_children():
        if isinstance(child, InstancePromptGenerator):
            child.fold_batch_norms()
        if name.startswith(("g_a", "g_s", "h_a")):
            setattr(fast, name, quantize_linear_layers(child))


@contextlib.contextmanager
def variant(name: str) -> Iterator[None]:
    if name != LINEAR_ONLY:
        yield
        return
    with mock.patch("transtic.models.base.quantize_transforms", _linear_only):
        yield


def speed(args: argparse.Namespace) -> dict[str, Any]:
    from codec_process import OurRunner
    from official_baseline import official_runner

    torch.set_num_threads(args.threads)
    model, source = bench_codec.load_model(args.checkpoint)
    state = model.state_dict()
    image = bench_codec.test_image()
    args.max_isa = None  # bench_codec's options this script does not take
    paths = []
    if args.official_src:
        official = (str(args.official_src), state)
        name = "official code (float32)"
        paths.append(bench_codec.in_child(name, official_runner, official, image, args, False))
    for name, precision in PATHS:
        with variant(name):
            runner = OurRunner(state, precision, "sdpa")
        paths.append(bench_codec.CodingPath(name, functools.partial(runner, image)))
    for p in paths:  # warm-up: oneDNN primitives, packed int8 weights, mask caches
        p.run_once()
        p.enc_s.clear()
        p.dec_s.clear()
    for _ in range(args.repeats):
        for p in paths:
            p.run_once()
    for p in paths:
        p.close()
    rows = bench_codec.summarise(paths, image)
    print(f"weights: {source}; 768x512; median of {args.repeats} interleaved rounds")
    bench_codec.print_table(rows, "vs official" if args.official_src else "vs float32")
    return {"machine": bench_codec.machine(args), "weights": source, "rows": rows}


def agreement(args: argparse.Namespace) -> dict[str, Any]:
    from transtic.evaluation.bdrate import bd_rate_or_none
    from transtic.evaluation.cli import codec_loader, task_backend
    from transtic.evaluation.protocol import align_mode, prepare
    from transtic.evaluation.runner import TaskScorer, evaluate_codec, load_eval_set

    torch.set_num_threads(args.threads)
    data = prepare(
        load_eval_set("folder", args.data, max_images=args.max_images), "classification", "paper"
    )
    backend = task_backend("classification", None, None, "cpu", options={"whole_image": True})
    scorer = TaskScorer("classification", backend, data)
    load = codec_loader(None, "cpu")
    curves: dict[str, list[dict[str, Any]]] = {}
    for name, precision in PATHS:
        for quality in args.qualities:
            checkpoint = f"transtic_small_cls_q{quality}"
            with variant(name):
                point, _ = evaluate_codec(
                    name,
                    checkpoint,
                    load(checkpoint),
                    data,
                    scorer,
                    progress=False,
                    align_mode=align_mode("paper"),
                    precision=precision,
                )
            row = point.to_dict()
            curves.setdefault(name, []).append(row)
            print(
                f"{name:<22}{checkpoint:<22} bpp {row['bpp']:.4f}  PSNR {row['psnr']:.2f}  "
                f"top-1 agreement {row['scores']['top1_agreement']:.1f}",
                flush=True,
            )
    exact = curves[PATHS[0][0]]
    bd: dict[str, dict[str, Any]] = {}
    for name, points in curves.items():
        if name == PATHS[0][0]:
            continue
        bd[name] = {}
        for metric, value in (
            ("top1_agreement", lambda r: r["scores"]["top1_agreement"]),
            ("psnr", lambda r: r["psnr"]),
        ):
            result, why = bd_rate_or_none(
                [r["bpp"] for r in exact],
                [value(r) for r in exact],
                [r["bpp"] for r in points],
                [value(r) for r in points],
            )
            bd[name][metric] = result if result is not None else why
            shown = why if result is None else f"{result:+.2f} %"
            print(f"BD-rate of {name} against float32 on {metric}: {shown}")
    return {"images": len(data.images), "curves": curves, "bd_rate_vs_float32": bd}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--official-src", type=Path, default=None)
    s.add_argument("--checkpoint", default=None)
    s.add_argument("--repeats", type=int, default=3)
    a = sub.add_parser("agreement")
    a.add_argument("--data", type=Path, required=True, help="a folder of photos")
    a.add_argument("--max-images", type=int, default=None)
    a.add_argument("--qualities", type=int, nargs="+", default=[1, 2, 3])
    for p in (s, a):
        p.add_argument("--threads", type=int, default=torch.get_num_threads())
        p.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    report = speed(args) if args.what == "speed" else agreement(args)
    if args.json:
        bench_codec.write_report(args.json, report)


if __name__ == "__main__":
    main()
