"""Codec speed, side by side in one run: the plain float32 eager path vs. the optimised ones.

Encodes and decodes a 768x512 photo (scikit-image's coffee, resized) and prints
milliseconds per megapixel, the speed-up over the plain path, and what each path
costs in bits and PSNR. Usage:

    python scripts/bench_codec.py [--checkpoint FILE] [--repeats 3] [--threads 2]

Without --checkpoint it uses ../shared/conformance's reference weights when present,
else a randomly initialised paper-size TransTIC (speed does not depend on weights).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from transtic.bitstream import EntropyParamMode
from transtic.cli import psnr
from transtic.codec import ImageCodec
from transtic.models import HyperpriorCodec, create_model, load_checkpoint

REFERENCE = Path(__file__).resolve().parents[2] / "shared/conformance"
SIZE = (512, 768)  # H, W


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
        return load_checkpoint(checkpoint), checkpoint
    ref = REFERENCE / "transtic_reference_weights_fp16.pth.tar"
    if ref.is_file():
        return load_checkpoint(ref), str(ref)
    torch.manual_seed(0)
    model = create_model("transtic")
    model.update(force=True)
    return model.eval(), "random paper-size TransTIC"


PATHS = {
    # name: (attention, precision, channels_last)
    "plain float32 eager": ("eager", "float32", False),
    "optimised float32": ("sdpa", "float32", True),
    "optimised bfloat16": ("sdpa", "bfloat16", True),
}


def run_path(model: HyperpriorCodec, image: torch.Tensor, name: str, repeats: int) -> dict:
    attention, precision, channels_last = PATHS[name]
    model.set_attention_impl(attention)
    model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    codec = ImageCodec(model, precision=precision, entropy_mode=EntropyParamMode.FIXED_POINT)
    codec.encode(image)  # warm-up: mask caches, oneDNN primitives
    enc_times, dec_times = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        encoded = codec.encode(image)
        mid = time.perf_counter()
        decoded = codec.decode(encoded.data)
        enc_times.append(mid - start)
        dec_times.append(time.perf_counter() - mid)
    megapixels = image.shape[1] * image.shape[2] / 1e6
    return {
        "path": name,
        "encode_ms_per_mp": statistics.median(enc_times) * 1e3 / megapixels,
        "decode_ms_per_mp": statistics.median(dec_times) * 1e3 / megapixels,
        "bpp": encoded.bpp,
        "psnr_db": psnr(decoded.image, image.float() / 255),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, source = load_model(args.checkpoint)
    image = test_image()
    print(f"machine: {platform.processor() or platform.machine()}, {args.threads} threads, "
          f"torch {torch.__version__}, cpu capability {torch.backends.cpu.get_cpu_capability()}")
    print(f"weights: {source}; image {SIZE[1]}x{SIZE[0]}; median of {args.repeats}")
    rows = [run_path(model, image, name, args.repeats) for name in PATHS]
    base = rows[0]
    print(f"{'path':<22}{'enc ms/MP':>11}{'dec ms/MP':>11}{'enc x':>7}{'dec x':>7}"
          f"{'bpp':>9}{'PSNR':>8}")
    for row in rows:
        row["encode_speedup"] = base["encode_ms_per_mp"] / row["encode_ms_per_mp"]
        row["decode_speedup"] = base["decode_ms_per_mp"] / row["decode_ms_per_mp"]
        print(f"{row['path']:<22}{row['encode_ms_per_mp']:>11.0f}{row['decode_ms_per_mp']:>11.0f}"
              f"{row['encode_speedup']:>7.2f}{row['decode_speedup']:>7.2f}"
              f"{row['bpp']:>9.4f}{row['psnr_db']:>8.2f}")
    fast = rows[-1]
    print(f"bfloat16 vs float32 cost: bpp {100 * (fast['bpp'] / rows[1]['bpp'] - 1):+.2f}%, "
          f"PSNR {fast['psnr_db'] - rows[1]['psnr_db']:+.3f} dB")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
