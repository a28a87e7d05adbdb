"""The shipped default codec encoding one 640x480 camera frame: in-process and in the service.

Starts the edge encoder service (``services.encoder serve``, shipped weights,
``precision=auto``), then alternates, frame by frame, an in-process
``ImageCodec.encode`` of the same codec and a gRPC ``Encode`` call, so that a shared
machine's load hits both alike. Prints median and p90 ms per frame against the budget.

    python scripts/bench_edge_frame.py [--frames 10] [--threads 2] [--budget-ms 1000] [--json F]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_services import Proc, free_port, pct  # noqa: E402
from PIL import Image  # noqa: E402

from services.generated.transtic.v1 import api_pb2, api_pb2_grpc  # noqa: E402
from transtic.codec import ImageCodec  # noqa: E402

CODEC = "transtic_small_cls_q1"
CODEC_FILE = ROOT / "transtic/weights/data" / f"{CODEC}.pth.tar"  # what the service picks
HEIGHT, WIDTH = 480, 640


def frame() -> bytes:
    try:
        from skimage import data

        photo = Image.fromarray(data.chelsea())
    except ImportError:
        noise = np.random.default_rng(0).random((HEIGHT, WIDTH, 3)) * 255
        photo = Image.fromarray(noise.astype("uint8"))
    buffer = io.BytesIO()
    photo.convert("RGB").resize((WIDTH, HEIGHT)).save(buffer, format="PNG")
    return buffer.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget-ms", type=float, default=1000.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    png = frame()
    codec = ImageCodec.from_checkpoint(str(CODEC_FILE), task="classification")
    work = Path(tempfile.mkdtemp(prefix="bench-edge-"))
    port, http = free_port(), free_port()
    service = Proc(
        "encoder service",
        ["-m", "services.encoder", "serve", "--host", "127.0.0.1", "--device", "cpu",
         "--grpc-port", str(port), "--http-port", str(http), "--task", "classification",
         "--torch-threads", str(args.threads), "--log-level", "WARNING"],
        work / "encoder.log",
        args.threads,
    )  # fmt: skip
    timings: dict[str, list[float]] = {"in-process": [], "encoder service (gRPC)": []}
    try:
        service.wait_http(f"http://127.0.0.1:{http}/readyz", 300)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = api_pb2_grpc.EncoderStub(channel)
            request = api_pb2.EncodeRequest(image=png, task="classification", quality=1)
            stub.Encode(request, timeout=300)  # warm-up of both
            image = Image.open(io.BytesIO(png)).convert("RGB")
            codec.encode(image)
            for _ in range(args.frames):
                start = time.perf_counter()
                codec.encode(Image.open(io.BytesIO(png)).convert("RGB"))
                timings["in-process"].append(time.perf_counter() - start)
                start = time.perf_counter()
                reply = stub.Encode(request, timeout=300)
                timings["encoder service (gRPC)"].append(time.perf_counter() - start)
    finally:
        service.stop()
    result = {
        "codec": CODEC,
        "frame": f"{WIDTH}x{HEIGHT}",
        "precision": codec.precision,
        "threads": args.threads,
        "budget_ms": args.budget_ms,
        "bpp": reply.bits_per_pixel,
        "service_timings_ms": dict(reply.timings_ms),
        "rows": [],
    }
    print(f"{CODEC}, {WIDTH}x{HEIGHT} frame, precision {codec.precision}, "
          f"{args.threads} threads, budget {args.budget_ms:.0f} ms")  # fmt: skip
    for name, seconds in timings.items():
        ms = [s * 1e3 for s in seconds]
        row = {"path": name, "median_ms": statistics.median(ms), "p90_ms": pct(ms, 90)}
        row["within_budget"] = row["median_ms"] <= args.budget_ms
        result["rows"].append(row)
        print(f"  {name:<26} median {row['median_ms']:7.0f} ms  p90 {row['p90_ms']:7.0f} ms  "
              f"{'within' if row['within_budget'] else 'OVER'} budget")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
