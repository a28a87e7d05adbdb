"""Codec speed, side by side in one run: the official TransTIC code and every path of ours.

Encodes and decodes a 768x512 photo (scikit-image's coffee, resized) with the
paper-size model and the same weights on every path. Runs are interleaved (every path
once per round, ``--repeats`` rounds), so a machine shared with other jobs slows every
path alike; the ratios to the official code are the figures to read. Prints the CPU
flags that decide the fast paths, what ``precision="auto"`` picks, milliseconds per
megapixel, ratios, and each path's bits and PSNR. Usage:

    python scripts/bench_codec.py --official-src ../official-src [--repeats 3] [--json F]

``--official-src`` is a checkout of github.com/NYCU-MAPL/TransTIC (never part of this
repository). Without --checkpoint the weights are ../shared/conformance's reference
weights when present, else a randomly initialised paper-size TransTIC.
"""

from __future__ import annotations

import argparse
import json
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

from official_baseline import OfficialProcess, clocks  # noqa: E402

from transtic.bitstream import EntropyParamMode  # noqa: E402
from transtic.cli import psnr  # noqa: E402
from transtic.codec import ImageCodec  # noqa: E402
from transtic.models import HyperpriorCodec, create_model, load_checkpoint  # noqa: E402
from transtic.precision import (  # noqa: E402
    NATIVE_BF16_CPU_FLAGS,
    NATIVE_INT8_CPU_FLAGS,
    cpu_flags,
    resolve_precision,
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
    """One way to code the image: encode() -> opaque stream, decode(stream) -> (3,H,W)."""

    name: str
    encode: Callable[[], Any]
    decode: Callable[[Any], torch.Tensor]
    size_of: Callable[[Any], int]
    # (wall s, CPU s of the process, all threads) per run
    enc_s: list[tuple[float, float]] = field(default_factory=list)
    dec_s: list[tuple[float, float]] = field(default_factory=list)
    stream: Any = None
    image: torch.Tensor | None = None
    # encode() returns (encode times, decode times, ...) measured in another process
    timed_elsewhere: bool = False
    close: Callable[[], None] = field(default=lambda: None)

    def run_once(self) -> None:
        if self.timed_elsewhere:
            self.stream = self.encode()
            self.image = self.decode(self.stream)
            self.enc_s.append(self.stream[0])
            self.dec_s.append(self.stream[1])
            return
        start = clocks()
        self.stream = self.encode()
        mid = clocks()
        self.image = self.decode(self.stream)
        end = clocks()
        self.enc_s.append((mid[0] - start[0], mid[1] - start[1]))
        self.dec_s.append((end[0] - mid[0], end[1] - mid[1]))


def our_path(
    model: HyperpriorCodec, image: torch.Tensor, name: str, precision: str, attention: str = "sdpa"
) -> CodingPath:
    model = load_checkpoint(model.state_dict())  # a private copy per path
    model.set_attention_impl(attention)
    codec = ImageCodec(model, precision=precision, entropy_mode=EntropyParamMode.FIXED_POINT)
    return CodingPath(
        name,
        lambda: codec.encode(image),
        lambda enc: codec.decode(enc.data).image,
        lambda enc: len(enc.data),
    )


def official_path(
    source: Path, model: HyperpriorCodec, image: torch.Tensor, threads: int, retain: bool
) -> CodingPath:
    """The official code, timed in its own process (see OfficialProcess)."""
    official = OfficialProcess(
        source, model.state_dict(), image, threads=threads, retain_memory=retain
    )
    path = CodingPath("official code (float32)", official.run_once, lambda r: r[3], lambda r: r[2])
    path.timed_elsewhere = True
    path.close = official.close
    return path


def build_paths(
    args: argparse.Namespace, model: HyperpriorCodec, image: torch.Tensor
) -> list[CodingPath]:
    paths = []
    if args.official_src:
        retain = args.official_allocator == "retain"
        paths.append(official_path(args.official_src, model, image, args.threads, retain))
    if args.plain:
        paths.append(our_path(model, image, "ours float32, eager attention", "float32", "eager"))
    names = {"float32": "ours float32 (exact)", "bfloat16": "ours bfloat16", "int8": "ours int8"}
    for precision in args.paths.split(","):
        paths.append(our_path(model, image, names[precision], precision))
    return paths


def machine() -> dict[str, Any]:
    flags = cpu_flags()
    return {
        "processor": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_flags": sorted(flags & SHOWN_FLAGS),
        "auto_precision": resolve_precision("auto", "cpu").precision,
        "auto_precision_lossy_allowed": resolve_precision("auto", "cpu", allow_int8=True).precision,
    }


def summarise(paths: list[CodingPath], image: torch.Tensor) -> list[dict[str, Any]]:
    megapixels = image.shape[1] * image.shape[2] / 1e6
    reference = image.float() / 255
    rows = []
    for p in paths:
        assert p.image is not None
        rows.append(
            {
                "path": p.name,
                "encode_ms_per_mp": statistics.median(t[0] for t in p.enc_s) * 1e3 / megapixels,
                "decode_ms_per_mp": statistics.median(t[0] for t in p.dec_s) * 1e3 / megapixels,
                "encode_cpu_ms_per_mp": statistics.median(t[1] for t in p.enc_s) * 1e3 / megapixels,
                "decode_cpu_ms_per_mp": statistics.median(t[1] for t in p.dec_s) * 1e3 / megapixels,
                "bpp": p.size_of(p.stream) * 8 / (image.shape[1] * image.shape[2]),
                "psnr_db": psnr(p.image, reference),
            }
        )
    base = rows[0]
    for row in rows:
        row["encode_x"] = base["encode_ms_per_mp"] / row["encode_ms_per_mp"]
        row["decode_x"] = base["decode_ms_per_mp"] / row["decode_ms_per_mp"]
        row["encode_cpu_x"] = base["encode_cpu_ms_per_mp"] / row["encode_cpu_ms_per_mp"]
        row["decode_cpu_x"] = base["decode_cpu_ms_per_mp"] / row["decode_cpu_ms_per_mp"]
    return rows


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
    parser.add_argument("--plain", action="store_true", help="also our eager-attention path")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, source = load_model(args.checkpoint)
    image = test_image()
    info = machine()
    print(
        f"machine: {info['processor']}, {args.threads} threads, torch {info['torch']}, "
        f"cpu capability {info['cpu_capability']}"
    )
    print(f"cpu flags: {' '.join(info['cpu_flags'])}")
    print(
        f"precision='auto' picks {info['auto_precision']} "
        f"({info['auto_precision_lossy_allowed']} with allow_int8=True)"
    )
    print(f"weights: {source}; image {SIZE[1]}x{SIZE[0]}; median of {args.repeats}, interleaved")
    if args.official_src:
        print(f"official code in its own process, {args.official_allocator} glibc allocator")
    paths = build_paths(args, model, image)
    for p in paths:  # warm-up: mask caches, oneDNN primitives, quantised weights
        p.run_once()
        p.enc_s.clear()
        p.dec_s.clear()
    for _ in range(args.repeats):
        for p in paths:
            p.run_once()
    for p in paths:
        p.close()
    rows = summarise(paths, image)
    label = "vs official" if args.official_src else f"vs {rows[0]['path']}"
    print(
        f"{'path':<32}{'enc ms/MP':>11}{'dec ms/MP':>11}{'enc x':>7}{'dec x':>7}"
        f"{'cpu enc x':>10}{'cpu dec x':>10}{'bpp':>9}{'PSNR':>8}   (x = {label})"
    )
    for row in rows:
        print(
            f"{row['path']:<32}{row['encode_ms_per_mp']:>11.0f}{row['decode_ms_per_mp']:>11.0f}"
            f"{row['encode_x']:>7.2f}{row['decode_x']:>7.2f}"
            f"{row['encode_cpu_x']:>10.2f}{row['decode_cpu_x']:>10.2f}"
            f"{row['bpp']:>9.4f}{row['psnr_db']:>8.2f}"
        )
    print("x: wall-time ratio; cpu x: ratio of process CPU time (all threads, user + system)")
    if args.json:
        report = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv),
            "machine": info,
            "weights": source,
            "image": f"{SIZE[1]}x{SIZE[0]}",
            "repeats": args.repeats,
            "official_allocator": args.official_allocator,
            "rows": rows,
        }
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
