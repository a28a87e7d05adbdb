"""Codec speed on one device (CUDA or CPU) per number format, interleaved, in ms/MP.

Used by scripts/gpu_check.sh. Full codec paths (``ImageCodec`` encode/decode, entropy
coding included) for float32 and bfloat16; transforms only (analysis + synthesis) for
float16, which has no codec path because its range is too small for the latents, and
for ``torch.compile`` of the float32 transforms (``--compile``; where it pays is what
this measures). Usage:

    python scripts/device_speed.py --device cuda [--tiny] [--size 512x768] [--json F]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from transtic.codec import ImageCodec  # noqa: E402
from transtic.models import HyperpriorCodec, create_model  # noqa: E402
from transtic.precision import resolve_precision  # noqa: E402
from transtic.weights import load_codec  # noqa: E402

REFERENCE = ROOT.parent / "shared/conformance/transtic_reference_weights_fp16.pth.tar"


def model_for(tiny: bool) -> tuple[HyperpriorCodec, str]:
    if not tiny and REFERENCE.is_file():
        return load_codec(REFERENCE).model, str(REFERENCE)
    torch.manual_seed(0)
    model = create_model("transtic-tiny" if tiny else "transtic")
    model.update(force=True)
    return model.eval(), "random " + ("tiny" if tiny else "paper-size") + " TransTIC"


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def codec_path(model: HyperpriorCodec, image: torch.Tensor, precision: str, device: torch.device):
    codec = ImageCodec(model, precision=precision, device=device)
    state: dict[str, Any] = {}

    def encode() -> None:
        state["stream"] = codec.encode(image).data

    def decode() -> None:
        codec.decode(state["stream"])

    return encode, decode


def transform_path(model: HyperpriorCodec, x: torch.Tensor, dtype: torch.dtype, compile_: bool):
    fast = copy.deepcopy(model).to(x.device, dtype).eval()
    analyze: Callable[[torch.Tensor], torch.Tensor] = fast.g_a
    synthesize: Callable[[torch.Tensor], torch.Tensor] = fast.g_s
    if compile_:
        analyze, synthesize = torch.compile(fast.g_a), torch.compile(fast.g_s)
    xd = x.to(dtype)
    state: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def encode() -> None:
        state["y"] = analyze(xd).round()

    @torch.no_grad()
    def decode() -> None:
        synthesize(state["y"])

    return encode, decode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny random model (smoke test)")
    parser.add_argument("--size", default="512x768", help="HxW, multiples of 256")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="also torch.compile (slow start)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    height, width = map(int, args.size.split("x"))
    model, source = model_for(args.tiny)
    image = (torch.rand(3, height, width) * 255).byte()
    x = image.float().div(255)[None].to(device)
    paths = {
        "codec float32": codec_path(model, image, "float32", device),
        "codec bfloat16": codec_path(model, image, "bfloat16", device),
    }
    if device.type == "cuda":
        paths["transforms float16"] = transform_path(model, x, torch.float16, False)
    paths["transforms float32"] = transform_path(model, x, torch.float32, False)
    if args.compile:
        paths["transforms float32, torch.compile"] = transform_path(model, x, torch.float32, True)
    times: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in paths}
    for round_ in range(args.repeats + 1):  # round 0 warms up (and compiles)
        for name, (encode, decode) in paths.items():
            enc, dec = timed(encode, device), timed(decode, device)
            if round_:
                times[name][0].append(enc)
                times[name][1].append(dec)
    megapixels = height * width / 1e6
    rows = [
        {
            "path": name,
            "encode_ms_per_mp": statistics.median(enc) * 1e3 / megapixels,
            "decode_ms_per_mp": statistics.median(dec) * 1e3 / megapixels,
        }
        for name, (enc, dec) in times.items()
    ]
    result = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "auto_precision": resolve_precision("auto", device).precision,
        "weights": source,
        "size": args.size,
        "repeats": args.repeats,
        "rows": rows,
    }
    print(f"{result['device_name']}: precision='auto' picks {result['auto_precision']}")
    for row in rows:
        print(
            f"  {row['path']:<36}{row['encode_ms_per_mp']:>10.1f}{row['decode_ms_per_mp']:>10.1f}"
            " ms/MP enc/dec"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
