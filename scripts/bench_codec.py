"""Codec speed, side by side in one run: the official TransTIC code and every path of ours.

Encodes and decodes a 768x512 photo (scikit-image's coffee, resized) with the
paper-size model and the same weights on every path. Runs are interleaved (every path
once per round, ``--repeats`` rounds), so a machine shared with other jobs slows every
path alike; the ratios to the official code are the figures to read. Prints the CPU
flags that decide the fast paths, what ``precision="auto"`` picks, milliseconds per
megapixel, ratios, and each path's bits and PSNR. Usage:

    python scripts/bench_codec.py --official-src ../official-src [--repeats 3] [--json F]
        [--paths auto,float32,bfloat16,int8] [--max-isa avx2]

``--max-isa avx2`` emulates an AVX2-only CPU: every path runs in its own process with
the kernel libraries capped (see isa_caps.py); a path that fails there is reported.

``--official-src`` is a checkout of github.com/NYCU-MAPL/TransTIC (never part of this
repository). Without --checkpoint the weights are ../shared/conformance's reference
weights when present, else a randomly initialised paper-size TransTIC.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from codec_process import CodecProcess, OurRunner, RoundResult, Seconds  # noqa: E402
from isa_caps import (  # noqa: E402
    MAX_ISA_CHOICES,
    cap_variables,
    capped_environment,
    kernel_report,
    probe,
)
from official_baseline import official_runner  # noqa: E402

from transtic.cli import psnr  # noqa: E402
from transtic.models import HyperpriorCodec, create_model  # noqa: E402
from transtic.precision import (  # noqa: E402
    NATIVE_BF16_CPU_FLAGS,
    NATIVE_INT8_CPU_FLAGS,
    cpu_flags,
)
from transtic.weights import load_codec  # noqa: E402

REFERENCE = Path(__file__).resolve().parents[2] / "shared/conformance"
SIZE = (512, 768)  # H, W
SHOWN_FLAGS = {"avx2", "fma", "avx512f", "avx512bw"} | NATIVE_BF16_CPU_FLAGS | NATIVE_INT8_CPU_FLAGS


def test_image() -> torch.Tensor:
    try:
        from skimage import data

        photo = Image.fromarray(data.coffee())
    except ImportError:  # a smooth synthetic scene keeps the script usable anywhere
        yy, xx = np.mgrid[0 : SIZE[0], 0 : SIZE[1]]
        arr = np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1).astype(np.uint8)
        photo = Image.fromarray(arr)
    photo = photo.convert("RGB").resize((SIZE[1], SIZE[0]), Image.BICUBIC)
    return torch.from_numpy(np.array(photo)).permute(2, 0, 1)


def load_model(checkpoint: str | None) -> tuple[HyperpriorCodec, str]:
    if checkpoint:
        return load_codec(checkpoint).model, checkpoint
    ref = REFERENCE / "transtic_reference_weights_fp16.pth.tar"
    if ref.is_file():
        return load_codec(ref).model, str(ref)
    torch.manual_seed(0)
    model = create_model("transtic")
    model.update(force=True)
    return model.eval(), "random paper-size TransTIC"


@dataclass
class CodingPath:
    """One way to code the image; ``run()`` codes it once and times encode and decode."""

    name: str
    run: Callable[[], RoundResult]
    close: Callable[[], None] = field(default=lambda: None)
    report: dict[str, Any] = field(default_factory=dict)  # its process's kernel libraries
    enc_s: list[Seconds] = field(default_factory=list)
    dec_s: list[Seconds] = field(default_factory=list)
    size: int = 0
    image: torch.Tensor | None = None
    error: str = ""  # why the path could not run on this machine

    def try_once(self) -> bool:
        """Run once; a path that fails here is reported, not fatal to the other paths."""
        try:
            self.run_once()
        except RuntimeError as exc:
            self.error = str(exc).splitlines()[0][:300]
            print(f"{self.name}: FAILED: {self.error}", flush=True)
        return not self.error

    def run_once(self) -> None:
        encode, decode, self.size, self.image = self.run()
        self.enc_s.append(encode)
        self.dec_s.append(decode)


OUR_NAMES = {
    "auto": "ours auto",
    "float32": "ours float32 (exact)",
    "bfloat16": "ours bfloat16",
    "int8": "ours int8",
}


def our_name(precision: str, resolved: str) -> str:
    return f"ours auto -> {resolved}" if precision == "auto" else OUR_NAMES[precision]


def in_child(
    name: str,
    factory: Callable[..., Any],
    factory_args: tuple[Any, ...],
    image: torch.Tensor,
    args: argparse.Namespace,
    retain: bool,
) -> CodingPath:
    env = capped_environment(args.max_isa, os.environ) if args.max_isa else None
    child = CodecProcess(
        factory, factory_args, image, threads=args.threads, retain_memory=retain, env=env
    )
    return CodingPath(name, child.run_once, child.close, child.report)


def build_paths(
    args: argparse.Namespace, model: HyperpriorCodec, image: torch.Tensor
) -> list[CodingPath]:
    """The official code always in a child of its own; ours too with --max-isa."""
    state = model.state_dict()
    paths = []
    if args.official_src:
        retain = args.official_allocator == "retain"
        factory_args = (str(args.official_src), state)
        paths.append(
            in_child("official code (float32)", official_runner, factory_args, image, args, retain)
        )
    ours: list[tuple[str, str | None]] = [(p, None) for p in args.paths.split(",")]
    ours += [("float32", impl) for impl in args.attention_paths.split(",") if impl]
    for precision, attention in ours:
        if args.max_isa:
            path = in_child("", OurRunner, (state, precision, attention), image, args, False)
            resolved = path.report["precision"]
        else:
            runner = OurRunner(state, precision, attention)
            path, resolved = CodingPath("", functools.partial(runner, image)), runner.precision
        path.name = our_name(precision, resolved)
        if attention:
            path.name = f"ours float32, {attention} attention"
        paths.append(path)
    return paths


def cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    names = [line.partition(":")[2].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or platform.machine()


def write_report(path: Path, report: dict[str, Any]) -> None:
    """``report`` as JSON, after the date and the command line that produced it."""
    stamped = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        **report,
    }
    path.write_text(json.dumps(stamped, indent=2))


def machine(args: argparse.Namespace) -> dict[str, Any]:
    """The chip, and what the kernel libraries of the timed processes use on it."""
    flags = cpu_flags()
    info = {
        "processor": cpu_model(),
        "load_average_at_start": os.getloadavg()[0],
        "threads": args.threads,
        "torch": torch.__version__,
        "cpu_flags": sorted(flags & SHOWN_FLAGS),
        "max_isa": args.max_isa or "native (ours in the benchmark's process)",
        "isa_caps": cap_variables(args.max_isa),
    }
    # a process started like the timed ones: its ATen/oneDNN ISA, bf16 cost, auto's choice
    info["timed_processes"] = probe(args.max_isa) if args.max_isa else kernel_report()
    return info


def print_header(info: dict[str, Any], args: argparse.Namespace, weights: str) -> None:
    seen = info["timed_processes"]
    print(f"machine: {info['processor']}, {args.threads} threads, torch {info['torch']}")
    print(f"cpu flags (the chip): {' '.join(info['cpu_flags'])}")
    if info["isa_caps"]:
        caps = " ".join(f"{k}={v}" for k, v in info["isa_caps"].items())
        print(f"EMULATION: every timed process capped to {args.max_isa}: {caps}")
    print(
        f"timed processes: ATen {seen['aten_capability']}, oneDNN bf16 "
        f"{'on' if seen['onednn_bf16'] else 'off'}"
        + (
            f", oneDNN ISA {seen['onednn_isa']} ({seen.get('onednn_conv_impl', '?')} conv)"
            if "onednn_isa" in seen
            else ""
        )
        + (
            f", bf16 matmul {seen['bf16_matmul_slowdown']}x float32's time"
            if "bf16_matmul_slowdown" in seen
            else ""
        )
    )
    print(
        f"precision='auto' picks {seen['auto_precision']} "
        f"({seen['auto_precision_lossy_allowed']} with allow_int8=True)"
        + (f": {seen['capped_note']}" if seen["capped_note"] else "")
    )
    print(f"weights: {weights}; image {SIZE[1]}x{SIZE[0]}; median of {args.repeats}, interleaved")
    where = "every path in its own process" if args.max_isa else "official code in its own process"
    print(f"{where}; official code with the {args.official_allocator} glibc allocator")


def summarise(paths: list[CodingPath], image: torch.Tensor) -> list[dict[str, Any]]:
    megapixels = image.shape[1] * image.shape[2] / 1e6
    reference = image.float() / 255
    rows = []
    for p in paths:
        if p.error or p.image is None:
            rows.append({"path": p.name, "error": p.error, "process": p.report})
            continue
        row: dict[str, Any] = {
            "path": p.name,
            "encode_ms_per_mp": statistics.median(t[0] for t in p.enc_s) * 1e3 / megapixels,
            "decode_ms_per_mp": statistics.median(t[0] for t in p.dec_s) * 1e3 / megapixels,
            "encode_cpu_ms_per_mp": statistics.median(t[1] for t in p.enc_s) * 1e3 / megapixels,
            "decode_cpu_ms_per_mp": statistics.median(t[1] for t in p.dec_s) * 1e3 / megapixels,
            "bpp": p.size * 8 / (image.shape[1] * image.shape[2]),
            "psnr_db": psnr(p.image, reference),
            "process": p.report,
        }
        rows.append(row)
    timed = [row for row in rows if "error" not in row]
    base = timed[0]
    base_path = next(p for p in paths if p.name == base["path"])
    for p in paths:
        if p.error or p.image is None:
            continue
        row = next(r for r in timed if r["path"] == p.name)
        # each round's ratio: the paths of one round ran back to back, so a machine that
        # drifts between rounds moves both sides of the ratio together
        for side, ours, theirs in (
            ("encode", p.enc_s, base_path.enc_s),
            ("decode", p.dec_s, base_path.dec_s),
        ):
            row[f"{side}_x_per_round"] = [b[0] / o[0] for b, o in zip(theirs, ours, strict=True)]
    for row in timed:
        row["encode_x"] = base["encode_ms_per_mp"] / row["encode_ms_per_mp"]
        row["decode_x"] = base["decode_ms_per_mp"] / row["decode_ms_per_mp"]
        row["encode_cpu_x"] = base["encode_cpu_ms_per_mp"] / row["encode_cpu_ms_per_mp"]
        row["decode_cpu_x"] = base["decode_cpu_ms_per_mp"] / row["decode_cpu_ms_per_mp"]
    return rows


def print_table(rows: list[dict[str, Any]], label: str) -> None:
    print(
        f"{'path':<32}{'enc ms/MP':>11}{'dec ms/MP':>11}{'cpu enc':>9}{'cpu dec':>9}"
        f"{'enc x':>7}{'dec x':>7}"
        f"{'cpu enc x':>10}{'cpu dec x':>10}{'bpp':>9}{'PSNR':>8}"
        f"{'enc x rounds':>14}{'dec x rounds':>14}   (x = {label})"
    )
    for row in rows:
        if "error" in row:
            print(f"{row['path']:<32}FAILED: {row['error']}")
            continue
        print(
            f"{row['path']:<32}{row['encode_ms_per_mp']:>11.0f}{row['decode_ms_per_mp']:>11.0f}"
            f"{row['encode_cpu_ms_per_mp']:>9.0f}{row['decode_cpu_ms_per_mp']:>9.0f}"
            f"{row['encode_x']:>7.2f}{row['decode_x']:>7.2f}"
            f"{row['encode_cpu_x']:>10.2f}{row['decode_cpu_x']:>10.2f}"
            f"{row['bpp']:>9.4f}{row['psnr_db']:>8.2f}"
            f"{ratio_range(row['encode_x_per_round']):>14}"
            f"{ratio_range(row['decode_x_per_round']):>14}"
        )


def ratio_range(ratios: list[float]) -> str:
    return f"{min(ratios):.2f}-{max(ratios):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official-src", type=Path, default=None, help="TransTIC checkout")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--paths", default="float32,bfloat16,int8", help="our precisions to time, comma-separated"
    )
    parser.add_argument(
        "--official-allocator",
        choices=("default", "retain"),
        default="default",
        help="the official code's process: glibc defaults (as its users run it) or "
        "our retain_freed_memory() setting (like for like)",
    )
    parser.add_argument(
        "--attention-paths",
        default="",
        help="also our float32 path with these attention implementations, comma-separated "
        "(eager, sdpa, native); the others run what ImageCodec picks",
    )
    parser.add_argument(
        "--max-isa",
        choices=MAX_ISA_CHOICES,
        default=None,
        help="run every path in its own process with the kernel libraries (ATen, oneDNN, "
        "MKL, FBGEMM) capped to this instruction set, e.g. avx2 to emulate an AVX2-only "
        "CPU on an AVX-512 one; native: own processes, no caps",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, source = load_model(args.checkpoint)
    image = test_image()
    info = machine(args)
    print_header(info, args, source)
    paths = build_paths(args, model, image)
    for p in paths:  # warm-up: mask caches, oneDNN primitives, quantised weights
        p.try_once()
        p.enc_s.clear()
        p.dec_s.clear()
    for _ in range(args.repeats):
        for p in paths:
            if not p.error:
                p.run_once()
    for p in paths:
        p.close()
    rows = summarise(paths, image)
    print_table(rows, "vs official" if args.official_src else "vs the first path")
    print(
        "ms/MP: wall time; cpu enc/dec: process CPU ms/MP (all threads, user + system); "
        "x: wall-time ratio of the medians; cpu x: CPU-time ratio; x rounds: lowest and "
        "highest wall-time ratio within one round (the paths of a round run back to back)"
    )
    if args.json:
        report = {
            "machine": info,
            "weights": source,
            "image": f"{SIZE[1]}x{SIZE[0]}",
            "repeats": args.repeats,
            "official_allocator": args.official_allocator,
            "emulated": bool(info["isa_caps"]),
            "load_average_at_end": os.getloadavg()[0],
            "rows": rows,
        }
        write_report(args.json, report)


if __name__ == "__main__":
    main()
