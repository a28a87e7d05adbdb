"""The main job: both services on this machine with the default models, frames streamed end to end.

Starts the cloud analytics service (REST + gRPC + web page) and the edge encoder
service, streams sample photos through the edge client (encode with instance
prompts -> gRPC stream -> decode with task prompts -> classify), prints each
frame's result as read back over REST, and the URLs to look at. Keeps both
services running until Ctrl-C (``--exit`` stops after the demo).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
# The default models: CPU-trained TransTIC codecs shipped inside the package
# (transtic/weights/data/MODEL_CARD.md) and the offline EfficientNet-Lite0 classifier.
DEFAULT_CODEC = "transtic_small_cls_q3"
CODECS = {
    "classification:1": "transtic_small_cls_q1",
    "classification:2": "transtic_small_cls_q2",
    "classification:3": "transtic_small_cls_q3",
}


def sample_frames(folder: Path) -> list[Path]:
    """Natural photos that ship with scikit-image and matplotlib (no downloads)."""
    import numpy as np
    from PIL import Image
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    photos = {
        "coffee": data.coffee(),
        "chelsea": data.chelsea(),
        "rocket": data.rocket(),
        "astronaut": data.astronaut(),
    }
    try:
        import matplotlib.cbook

        with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
            photos["grace_hopper"] = np.array(Image.open(fh).convert("RGB"))
    except Exception:  # matplotlib is optional here
        pass
    paths = []
    for i, (name, pixels) in enumerate(photos.items()):
        path = folder / f"{i:03d}_{name}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return json.loads(reply.read())


def wait_ready(url: str, proc: subprocess.Popen, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with code {proc.returncode}; see its log above")
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"{what} not ready after {timeout:.0f}s ({url})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http-port", type=int, default=8080)
    parser.add_argument("--grpc-port", type=int, default=50051)
    parser.add_argument("--encoder-port", type=int, default=50052)
    parser.add_argument("--encoder-metrics-port", type=int, default=9102)
    parser.add_argument("--state-dir", type=Path, default=ROOT / "var" / "demo")
    parser.add_argument("--quality", type=int, default=3, help="codec quality of the stream")
    parser.add_argument("--exit", action="store_true", help="stop the services after the demo")
    args = parser.parse_args()

    state = args.state_dir
    state.mkdir(parents=True, exist_ok=True)
    frames_dir = state / "frames"
    frames = sample_frames(frames_dir)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    analytics = subprocess.Popen(
        [
            PY,
            "-m",
            "services.analytics",
            "--codec-checkpoint",
            DEFAULT_CODEC,
            "--codec-checkpoints",
            json.dumps(CODECS),
            "--http-port",
            str(args.http_port),
            "--grpc-port",
            str(args.grpc_port),
            "--db-path",
            str(state / "analytics.db"),
        ],
        cwd=ROOT,
        env=env,
    )
    encoder = subprocess.Popen(
        [
            PY,
            "-m",
            "services.encoder",
            "serve",
            "--grpc-port",
            str(args.encoder_port),
            "--http-port",
            str(args.encoder_metrics_port),
        ],
        cwd=ROOT,
        env=env,
    )
    base = f"http://127.0.0.1:{args.http_port}"
    try:
        wait_ready(f"{base}/readyz", analytics, "analytics service")
        encoder_http = f"http://127.0.0.1:{args.encoder_metrics_port}"
        wait_ready(f"{encoder_http}/readyz", encoder, "encoder service")
        stream_id = f"demo-{int(time.time())}"
        print(f"\n== streaming {len(frames)} frames from {frames_dir} as stream {stream_id!r}\n")
        code = subprocess.call(
            [
                PY,
                "-m",
                "services.encoder",
                "stream",
                "--source",
                str(frames_dir),
                "--target",
                f"127.0.0.1:{args.grpc_port}",
                "--stream-id",
                stream_id,
                "--task",
                "classification",
                "--quality",
                str(args.quality),
                "--summary-json",
                str(state / "summary.json"),
            ],
            cwd=ROOT,
            env=env,
        )
        if code != 0:
            print(f"stream client exited with {code}", file=sys.stderr)
        results = get_json(f"{base}/v1/streams/{stream_id}/frames?since=-1&limit=100")
        print("\n== results read back over REST")
        for frame in results.get("frames", []):
            result = frame.get("result", {})
            labels = result.get("labels") or []
            top = ", ".join(f"{lab['name']} {lab['score']:.2f}" for lab in labels[:3])
            name = frames[frame["sequence"]].name if frame["sequence"] < len(frames) else "?"
            bpp = result.get("bits_per_pixel", 0.0)
            print(f"  #{frame['sequence']} {name:<22} {bpp:.3f} bpp  {top}")
        summary = json.loads((state / "summary.json").read_text())
        print(f"\n== stream summary: frames {json.dumps(summary.get('frames'))}")
        print(f"   rate {json.dumps(summary.get('rate'))}")
        print("\n== open")
        print(f"  web page:           {base}/")
        print(f"  REST API docs:      {base}/docs")
        print(f"  analytics metrics:  {base}/metrics")
        print(f"  encoder metrics:    {encoder_http}/metrics")
        print(f"  analytics gRPC:     127.0.0.1:{args.grpc_port}")
        print(f"  encoder gRPC:       127.0.0.1:{args.encoder_port}")
        if args.exit:
            return 0 if code == 0 else 1
        print("\nservices keep running; Ctrl-C stops them")
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            while analytics.poll() is None and encoder.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        return 0
    finally:
        for proc in (encoder, analytics):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (encoder, analytics):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    raise SystemExit(main())
