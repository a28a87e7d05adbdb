"""Benchmark the analytics and encoder services as real processes, side by side.

One run measures:
  (a) analytics frames/s with dynamic batching (many concurrent gRPC Analyze calls,
      max_batch_size 8) against one frame at a time (max_batch_size 1, one client);
  (b) an edge stream end to end (``python -m services.encoder stream``, flat out):
      frames/s, and per-stage latency p50/p99 from the stored results' ``timings_ms``;
  (c) service overhead: REST and gRPC round trips against the in-process call
      (``ImageCodec.decode`` + ``backend.predict``) on the same bitstream;
  (d) peak RSS (VmHWM) of each process.

    python scripts/bench_services.py --quick [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
import httpx  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from services.generated.transtic.v1 import api_pb2, api_pb2_grpc  # noqa: E402

STAGES = ("queue", "parse", "entropy_decode", "synthesis", "task")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


class Proc:
    """A child process; reaped with wait4, whose rusage gives its exact peak RSS."""

    def __init__(self, name: str, args: Sequence[str], log: Path, threads: int) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRANSTIC_")}
        env.update(OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        self.name, self.log = name, log
        self.returncode: int | None = None
        self.url = self.target = ""
        self.peak_mb: float | None = None
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )

    def fail(self, what: str) -> SystemExit:
        tail = self.log.read_text(errors="replace")[-3000:]
        return SystemExit(f"{self.name}: {what}\n--- {self.log} ---\n{tail}")

    def reap(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` s for the exit; record the exit code and peak RSS."""
        deadline = time.monotonic() + timeout
        while self.returncode is None:
            pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                self.returncode = self.proc.returncode = os.waitstatus_to_exitcode(status)
                self.peak_mb = usage.ru_maxrss / 1024  # KiB on Linux
            elif time.monotonic() > deadline:
                return None
            else:
                time.sleep(0.05)
        return self.returncode

    def wait_http(self, url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.reap(0) is not None:
                raise self.fail(f"exited with {self.returncode}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise self.fail(f"not ready within {timeout:.0f} s")

    def stop(self) -> None:
        if self.reap(0) is None:
            self.proc.send_signal(signal.SIGTERM)
            if self.reap(30) is None:
                self.proc.kill()
                self.reap(30)


def start_analytics(
    codec: Path, work: Path, name: str, batch: int, threads: int, device: str = "cpu"
) -> Proc:
    http, grpc_port = free_port(), free_port()
    flags = f"-m services.analytics --host 127.0.0.1 --device {device} --log-level WARNING "
    flags += "--task-backends classification --db-synchronous NORMAL --max-queue 1024"
    proc = Proc(
        name,
        [
            *flags.split(), "--codec-checkpoint", str(codec), "--db-path", str(work / f"{name}.db"),
            "--http-port", str(http), "--grpc-port", str(grpc_port),
            "--max-batch-size", str(batch), "--max-batch-delay-ms", "5" if batch > 1 else "0",
        ],
        work / f"{name}.log",
        threads,
    )  # fmt: skip
    proc.url, proc.target = f"http://127.0.0.1:{http}", f"127.0.0.1:{grpc_port}"
    return proc


def pick_codec(spec: str | None, cache_dir: str | None, work: Path) -> tuple[Path, str]:
    """The given codec, else a TransTIC classification codec found locally, else a tiny one."""
    from transtic.weights import WeightsError, default_registry, locate_codec

    # Checked here as the service will check it, so a bad file fails before any start-up.
    if spec:
        path = locate_codec(spec, cache_dir=cache_dir).path
        return path, f"{spec} (given: {path})"
    codecs = [e.name for e in default_registry() if e.kind == "codec"]
    for name in sorted(codecs, key=lambda n: ("_cls_" not in n, n)):  # classification first
        try:
            path = locate_codec(name, cache_dir=cache_dir).path
        except WeightsError:
            continue
        return path, f"{name}, the default codec ({path})"
    import torch

    from transtic.models import create_model, save_checkpoint

    torch.manual_seed(0)
    model = create_model("transtic-tiny")
    model.update(force=True)
    path = save_checkpoint(model, work / "tiny.pth")
    return path, (
        "transtic-tiny with random weights: no TransTIC codec is shipped in a package and none "
        f"was found in the weights cache ({cache_dir}); `transtic weights pull transtic_cls_q1` "
        "and pass --weights-cache-dir for real rates"
    )


def write_frames(folder: Path, count: int, height: int, width: int) -> list[Path]:
    """Crops of the photos that ship with scikit-image (no downloads), as PNGs."""
    from PIL import Image
    from skimage import data

    photos = [data.coffee(), data.chelsea(), data.astronaut(), data.rocket()]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        photo = Image.fromarray(photos[i % len(photos)])
        scale = max(height / photo.height, width / photo.width) * (1 + 0.1 * (i // len(photos)))
        photo = photo.resize((round(photo.width * scale) + 1, round(photo.height * scale) + 1))
        left = (i * 13) % (photo.width - width + 1)
        top = (i * 7) % (photo.height - height + 1)
        path = folder / f"frame_{i:04d}.png"
        photo.crop((left, top, left + width, top + height)).save(path)
        paths.append(path)
    return paths


def metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name
    )


def throughput(target: str, data: bytes, frames: int, clients: int) -> tuple[float, list[float]]:
    """Seconds for ``frames`` Analyze calls from ``clients`` concurrent callers, and latencies."""
    with grpc.insecure_channel(target) as channel:
        stub = api_pb2_grpc.AnalyticsStub(channel)
        request = api_pb2.AnalyzeRequest(bitstream=data)
        latencies: list[float] = []

        def call(_: int) -> None:
            t0 = time.perf_counter()
            stub.Analyze(request, timeout=600)
            latencies.append((time.perf_counter() - t0) * 1e3)

        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(call, range(frames)))
        return time.perf_counter() - start, latencies


def batching(
    batched: Proc, single: Proc, data: bytes, frames: tuple[int, int], clients: int, rounds: int
) -> dict[str, Any]:
    """(a) in alternating rounds, so that load changes on a shared machine hit both alike."""
    for service in (batched, single):  # warm-up: decoder worker, allocator, lazy caches
        throughput(service.target, data, 2, 1)
    names = [f"transtic_analytics_batch_size_{k}" for k in ("count", "sum")]
    before = [metric(batched.url, n) for n in names]
    runs: dict[str, list[tuple[float, list[float]]]] = {"batched": [], "single": []}
    for _ in range(rounds):
        runs["batched"].append(throughput(batched.target, data, frames[0] // rounds, clients))
        runs["single"].append(throughput(single.target, data, frames[1] // rounds, 1))
    count, total = (metric(batched.url, n) - b for n, b in zip(names, before, strict=True))
    out: dict[str, Any] = {"rounds": rounds, "mean_batch_size": total / max(1.0, count)}
    for mode, n_clients in (("batched", clients), ("single", 1)):
        latencies = [ms for _, run in runs[mode] for ms in run]
        out[mode] = {
            "frames": len(latencies), "clients": n_clients,
            "fps": len(latencies) / sum(seconds for seconds, _ in runs[mode]),
            "latency_p50_ms": pct(latencies, 50), "latency_p99_ms": pct(latencies, 99),
        }  # fmt: skip
    out["ratio"] = out["batched"]["fps"] / out["single"]["fps"]
    return out


def overhead(service: Proc, data: bytes, codec: Path, reps: int) -> dict[str, float]:
    """Median REST / gRPC round trips against decode + predict in this process."""
    import torch

    from transtic.codec import ImageCodec
    from transtic.tasks import create_backend

    local = ImageCodec.from_checkpoint(str(codec), device="cpu")
    backend = create_backend("classification")
    backend.load("cpu")
    headers = {"content-type": "application/x-transtic"}

    def in_process() -> None:
        with torch.inference_mode():
            backend.predict([local.decode(data).image])

    with grpc.insecure_channel(service.target) as channel, httpx.Client(timeout=120) as client:
        stub = api_pb2_grpc.AnalyticsStub(channel)
        request = api_pb2.AnalyzeRequest(bitstream=data)
        calls: dict[str, Callable[[], object]] = {
            "in_process": in_process,
            "grpc": lambda: stub.Analyze(request, timeout=120),
            "rest": lambda: client.post(
                f"{service.url}/v1/analyze", content=data, headers=headers
            ).raise_for_status(),
        }
        times: dict[str, list[float]] = {name: [] for name in calls}
        for rep in range(reps + 1):  # interleaved, so load drift hits all three alike
            for name, fn in calls.items():
                t0 = time.perf_counter()
                fn()
                if rep:  # the first round warms up
                    times[name].append((time.perf_counter() - t0) * 1e3)
    return {"reps": reps, **{f"{name}_ms": statistics.median(t) for name, t in times.items()}}


def stream(service: Proc, codec: Path, work: Path, threads: int) -> dict[str, Any]:
    """The edge client streams the frame folder flat out; stage latencies read over REST."""
    stream_id, summary_path = f"bench-{int(time.time())}", work / "summary.json"
    flags = "-m services.encoder stream --task classification --device cpu --log-level WARNING"
    client = Proc(
        "edge stream client",
        [
            *flags.split(), "--source", str(work / "frames"), "--target", service.target,
            "--stream-id", stream_id, "--summary-json", str(summary_path),
            "--checkpoint", f"classification:1={codec}",
        ],
        work / "client.log",
        threads,
    )  # fmt: skip
    if client.reap(900) != 0:
        raise client.fail(f"exited with {client.returncode}")
    summary = json.loads(summary_path.read_text())
    reply = httpx.get(
        f"{service.url}/v1/streams/{stream_id}/frames", params={"limit": 1000}, timeout=30
    )
    frames = reply.json()["frames"]

    def spread(values: list[float]) -> dict[str, float]:
        return {"p50_ms": pct(values, 50), "p99_ms": pct(values, 99)}

    return {
        "frames": len(frames), "acked": summary["frames"]["acked"],
        "fps": len(frames) / summary["duration_s"], "client_encode_ms": summary["encode_ms"],
        "bits_per_pixel": summary["rate"]["achieved_bpp"],
        "stages": {s: spread([f["result"]["timings_ms"][s] for f in frames]) for s in STAGES},
        "capture_to_stored_ms": spread([f["received_ms"] - f["capture_time_ms"] for f in frames]),
        "client_peak_rss_mb": client.peak_mb,
    }  # fmt: skip


def machine(threads: int) -> dict[str, Any]:
    import torch

    cpuinfo = Path("/proc/cpuinfo")
    models = [line for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
    return {
        "cpu": models[0].split(":", 1)[1].strip() if models else platform.processor(),
        "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
        "load_avg_1m": os.getloadavg()[0], "threads_per_process": threads,
        "torch": torch.__version__, "python": platform.python_version(),
        "platform": platform.platform(),
    }  # fmt: skip


def report(r: dict[str, Any]) -> str:
    m, a, b, c = r["machine"], r["batching"], r["stream"], r["overhead"]
    fast, slow, base = a["batched"], a["single"], c["in_process_ms"]

    def spread(x: dict[str, float]) -> str:
        return f"{x['p50_ms']:.1f} / {x['p99_ms']:.1f}"

    def lat(x: dict[str, float]) -> str:
        return f"{x['latency_p50_ms']:.0f} / {x['latency_p99_ms']:.0f}"

    rows = [
        ("a", f"frames/s, batched (max_batch_size {a['batch_size']}, {fast['clients']} "
              f"concurrent clients, mean batch {a['mean_batch_size']:.1f})", f"{fast['fps']:.2f}"),
        ("a", "frames/s, one at a time (max_batch_size 1, one client)", f"{slow['fps']:.2f}"),
        ("a", "**batched / one at a time**", f"**{a['ratio']:.2f}x**"),
        ("a", "request latency p50 / p99 ms: batched; one at a time", f"{lat(fast)}; {lat(slow)}"),
        ("b", f"edge stream frames/s ({b['frames']} frames, {b['bits_per_pixel']:.3f} bpp)",
              f"{b['fps']:.2f}"),
        *[("b", f"{stage} p50 / p99 ms", spread(x)) for stage, x in b["stages"].items()],
        ("b", "edge client encode p50 / p95 ms",
              f"{b['client_encode_ms']['p50']:.1f} / {b['client_encode_ms']['p95']:.1f}"),
        ("b", "capture -> result stored p50 / p99 ms", spread(b["capture_to_stored_ms"])),
        ("c", f"in-process decode + predict, median of {c['reps']} ms", f"{base:.1f}"),
        ("c", "gRPC Analyze round trip ms (x in-process)",
              f"{c['grpc_ms']:.1f} ({c['grpc_ms'] / base:.2f}x)"),
        ("c", "REST POST /v1/analyze round trip ms (x in-process)",
              f"{c['rest_ms']:.1f} ({c['rest_ms'] / base:.2f}x)"),
        *[("d", f"peak RSS MiB, {name}", f"{mb:.0f}" if mb else "n/a")
          for name, mb in r["peak_rss_mb"].items()],
    ]  # fmt: skip
    lines = [
        f"machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable, load "
        f"{m['load_avg_1m']:.1f}), CPU only, torch {m['torch']}, Python {m['python']}, "
        f"{m['threads_per_process']} torch thread(s) per process",
        f"codec: {r['codec']}",
        f"frames: {r['height']}x{r['width']} PNG crops; services ready after "
        f"{r['startup_s']:.1f} s; whole run {r['duration_s']:.1f} s",
        "",
        "| part | measure | value |",
        "|---|---|---|",
        *[f"| {part} | {what} | {value} |" for part, what, value in rows],
    ]
    return "\n".join(lines)


def measure(args: argparse.Namespace, work: Path, t_start: float) -> dict[str, Any]:
    import torch

    torch.set_num_threads(args.threads)
    height, width = map(int, (args.size or ("192x256" if args.quick else "384x512")).split("x"))
    n_batched, n_single, rounds = (48, 12, 2) if args.quick else (192, 48, 4)
    n_stream, reps = (12, 5) if args.quick else (48, 20)
    codec, codec_note = pick_codec(args.checkpoint, args.weights_cache_dir, work)
    frames = write_frames(work / "frames", n_stream, height, width)
    batched = start_analytics(
        codec, work, "analytics-batched", args.batch_size, args.threads, args.device
    )
    single = start_analytics(codec, work, "analytics-single", 1, args.threads, args.device)
    enc_port, enc_http = free_port(), free_port()
    flags = f"-m services.encoder serve --host 127.0.0.1 --device {args.device} --log-level WARNING"
    encoder = Proc(
        "encoder service",
        [
            *flags.split(), "--checkpoint", f"classification:1={codec}",
            "--grpc-port", str(enc_port), "--http-port", str(enc_http),
        ],
        work / "encoder.log",
        args.threads,
    )  # fmt: skip
    services = {
        f"analytics (max_batch_size {args.batch_size})": batched,
        "analytics (max_batch_size 1)": single,
        "encoder service": encoder,
    }
    try:
        for proc in (batched, single):
            proc.wait_http(f"{proc.url}/readyz", 300)
        encoder.wait_http(f"http://127.0.0.1:{enc_http}/readyz", 300)
        startup_s = time.monotonic() - t_start
        # The input of (a) and (c): the first frame, coded by the edge encoder service.
        with grpc.insecure_channel(f"127.0.0.1:{enc_port}") as channel:
            request = api_pb2.EncodeRequest(image=frames[0].read_bytes())
            data = api_pb2_grpc.EncoderStub(channel).Encode(request, timeout=300).bitstream
        compared = batching(batched, single, data, (n_batched, n_single), args.clients, rounds)
        results: dict[str, Any] = {
            "machine": machine(args.threads), "codec": codec_note, "quick": args.quick,
            "height": height, "width": width, "startup_s": startup_s,
            "batching": {"batch_size": args.batch_size, **compared},
            "overhead": overhead(single, data, codec, reps),
            "stream": stream(batched, codec, work, args.threads),
        }  # fmt: skip
    finally:
        for proc in services.values():
            proc.stop()
    rss = {name: proc.peak_mb for name, proc in services.items()}
    rss["edge stream client"] = results["stream"]["client_peak_rss_mb"]
    own_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss["this script (in-process baseline)"] = own_kib / 1024
    results["peak_rss_mb"] = rss
    return results


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small run (about 1-2 minutes)")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--checkpoint", help="codec file or weights name (default: found, else tiny)")
    p.add_argument("--weights-cache-dir", default=None, help="where weights files are looked up")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--device", default="cpu", help="device of both services: cpu, cuda, ...")
    p.add_argument("--batch-size", type=int, default=8, help="max_batch_size of (a)")
    p.add_argument("--clients", type=int, default=16, help="concurrent callers of (a)")
    p.add_argument("--size", help="frame size HxW (default 192x256 quick, 384x512 full)")
    p.add_argument("--work-dir", type=Path, help="keep logs and databases here")
    args = p.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before torch is imported
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench-services-"))
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    try:
        results = measure(args, work, t_start)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    results["duration_s"] = time.monotonic() - t_start
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
