"""Real-process helpers for the end-to-end service tests.

Both services and the edge stream client run as ``python -m ...`` child processes on
127.0.0.1 with free ports; their output goes to log files whose tail is shown when a
check fails. Only ``make_inputs`` imports the codec library (and so torch).
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from transtic.client import AnalyticsClient, ClientError

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
# Services import torch and load models: seconds on an idle machine, much more on a busy one.
READY_TIMEOUT_S = 150.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env() -> dict[str, str]:
    """The test's environment minus service settings, one thread per process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRANSTIC_")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    return env


class Process:
    """A child process whose stdout and stderr go to a log file (appended across restarts)."""

    def __init__(self, name: str, args: Sequence[str], log_path: Path) -> None:
        self.name = name
        self.args = [PY, *args]
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {self.name} at {time.time():.3f}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.args, cwd=REPO, env=child_env(), stdout=log, stderr=subprocess.STDOUT
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 6000) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-chars:]

    def fail(self, message: str) -> AssertionError:
        return AssertionError(f"{self.name}: {message}\n--- log tail ---\n{self.log_tail()}")

    def wait_until(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``check`` until true; fail early (with the log) if the process dies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                code = self.proc.returncode if self.proc is not None else None
                raise self.fail(f"exited with {code} while waiting for {what}")
            if check():
                return
            time.sleep(0.1)
        raise self.fail(f"{what}: not within {timeout:.0f} s")

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise self.fail(f"still running after {timeout:.0f} s") from None

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def kill(self) -> int:
        """SIGKILL: no drain, no cleanup, as a crash or an OOM kill would do."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait(30)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(30)


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def grpc_health(target: str, timeout: float = 5.0) -> int:
    """The overall gRPC health status (a ``HealthCheckResponse.ServingStatus`` value)."""
    with grpc.insecure_channel(target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=timeout
        )
    return int(reply.status)


SERVING = health_pb2.HealthCheckResponse.SERVING


class Analytics(Process):
    """``python -m services.analytics``; restarts reuse the ports and the SQLite file."""

    def __init__(
        self, codec: Path, db: Path, cache_dir: Path, log_path: Path, extra: Sequence[str] = ()
    ) -> None:
        self.http_port, self.grpc_port = free_port(), free_port()
        self.db = db
        args = [
            "-m", "services.analytics",
            "--codec-checkpoint", str(codec),
            "--host", "127.0.0.1",
            "--http-port", str(self.http_port),
            "--grpc-port", str(self.grpc_port),
            "--device", "cpu",
            "--db-path", str(db),
            "--weights-cache-dir", str(cache_dir),
            "--max-batch-delay-ms", "2",
            "--shutdown-grace-s", "5",
            *extra,
        ]  # fmt: skip
        super().__init__("analytics", args, log_path)
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.target = f"127.0.0.1:{self.grpc_port}"

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        self.wait_until(lambda: http_ok(f"{self.url}/readyz"), timeout, "readiness (/readyz)")

    def metrics(self) -> str:
        reply = httpx.get(f"{self.url}/metrics", timeout=10.0)
        reply.raise_for_status()
        return reply.text


class Encoder(Process):
    """``python -m services.encoder serve`` with one classification codec (quality 1)."""

    def __init__(self, codec: Path, cache_dir: Path, log_path: Path, extra: Sequence[str] = ()):
        self.grpc_port, self.http_port = free_port(), free_port()
        args = [
            "-m", "services.encoder", "serve",
            "--checkpoint", f"classification:1={codec}",
            # the test's codec, not the shipped q3 the service would otherwise default to
            "--quality", "1",
            "--host", "127.0.0.1",
            "--grpc-port", str(self.grpc_port),
            "--http-port", str(self.http_port),
            "--device", "cpu",
            "--weights-cache-dir", str(cache_dir),
            "--shutdown-grace-s", "5",
            *extra,
        ]  # fmt: skip
        super().__init__("encoder", args, log_path)
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.target = f"127.0.0.1:{self.grpc_port}"

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        self.wait_until(lambda: http_ok(f"{self.url}/readyz"), timeout, "readiness (/readyz)")


def stream_client(
    *,
    codec: Path,
    cache_dir: Path,
    source: Path,
    target: str,
    stream_id: str,
    summary: Path,
    log_path: Path,
    extra: Sequence[str] = (),
) -> Process:
    """The edge client (``python -m services.encoder stream``), not started yet."""
    args = [
        "-m", "services.encoder", "stream",
        "--source", str(source),
        "--target", target,
        "--stream-id", stream_id,
        "--summary-json", str(summary),
        "--checkpoint", f"classification:1={codec}",
        "--task", "classification",
        "--device", "cpu",
        "--host", "127.0.0.1",
        "--weights-cache-dir", str(cache_dir),
        *extra,
    ]  # fmt: skip
    return Process(f"stream client {stream_id}", args, log_path)


# -- reading results back ------------------------------------------------------------------
def metric(text: str, name: str, labels: Mapping[str, str] | None = None) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels`` (0 if none)."""
    want = dict(labels or {})
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in want.items()):
                total += sample.value
    return total


def stored_frames(url: str, stream_id: str) -> list[dict[str, Any]]:
    """Every stored frame of a stream, read with the SDK's REST client (following pages)."""
    with AnalyticsClient(url, timeout_s=10.0) as client:
        try:
            return [frame.model_dump(mode="json") for frame in client.iter_frames(stream_id)]
        except ClientError as exc:
            if exc.code == "NOT_FOUND":
                return []
            raise


def read_summary(path: Path) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads(path.read_text())
    return summary


# -- inputs --------------------------------------------------------------------------------
def scene(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth synthetic photo-like picture (gradient, a disc, mild noise), HxWx3 uint8."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, 3)
    channels = [
        127 + 100 * np.sin(x / width * np.pi * (c + 1) + y / height * np.pi + phase[c])
        for c in range(3)
    ]
    pixels = np.stack(channels, axis=-1)
    cy, cx = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width
    disc = (y - cy) ** 2 + (x - cx) ** 2 < (min(height, width) / 5) ** 2
    pixels[disc] = rng.integers(0, 256, 3)
    pixels += rng.normal(0, 4, pixels.shape)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def write_frames(folder: Path, count: int, height: int = 96, width: int = 128) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"frame_{i:04d}.png"
        Image.fromarray(scene(height, width, seed=i)).save(path)
        paths.append(path)
    return paths


def png(height: int = 96, width: int = 128, seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(scene(height, width, seed)).save(buffer, format="PNG")
    return buffer.getvalue()


# -- processes seen through /proc -------------------------------------------------------------
def child_pids(pid: int) -> list[int]:
    """Direct children of a live process (Linux /proc)."""
    pids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        pids += [int(p) for p in (task / "children").read_text().split()]
    return pids


def running(pid: int) -> bool:
    """True unless the process is gone or a zombie (an orphan may wait to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_gone(pids: Sequence[int], timeout: float) -> list[int]:
    """The pids still running after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    left = [p for p in pids if running(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [p for p in left if running(p)]
    return left


# -- bad inputs --------------------------------------------------------------------------------
BITSTREAM = {"content-type": "application/x-transtic"}


@dataclass
class Inputs:
    good: bytes  # coded by the encoder service
    foreign: bytes  # coded with other weights
    corrupt: bytes  # one byte flipped (the checksum catches it)
    truncated: bytes
    random: bytes
    garbage_payload: bytes  # a valid container around random entropy-coded strings
    detection_file: str  # the weights file the detection backend lacks


def make_inputs(good: bytes, foreign: bytes, detection_weights: str) -> Inputs:
    from transtic.bitstream import decode_container, encode_container
    from transtic.weights import default_registry

    middle = len(good) // 2
    rng = random.Random(7)
    parts = decode_container(good)
    return Inputs(
        good=good,
        foreign=foreign,
        corrupt=good[:middle] + bytes([good[middle] ^ 0xFF]) + good[middle + 1 :],
        truncated=good[: len(good) * 2 // 3],
        random=rng.randbytes(len(good)),
        garbage_payload=encode_container(
            parts.header, rng.randbytes(len(parts.y_string)), rng.randbytes(len(parts.z_string))
        ),
        detection_file=default_registry().get(detection_weights).filename,
    )


def rest_cases(x: Inputs, max_upload: int) -> list[tuple[str, dict[str, Any], int, str, str]]:
    """(name, httpx.post kwargs, HTTP status, error code, text the message contains)."""
    stream, image = BITSTREAM, {"content-type": "image/png"}
    big = b"\x89PNG" + os.urandom(max_upload)
    chunks = iter([big[: max_upload // 2], big[max_upload // 2 :]])  # no content-length
    return [
        ("corrupt", {"content": x.corrupt, "headers": stream}, 400, "INVALID_ARGUMENT", ""),
        ("truncated", {"content": x.truncated, "headers": stream}, 400, "INVALID_ARGUMENT", ""),
        ("random", {"content": x.random, "headers": stream}, 400, "INVALID_ARGUMENT", ""),
        ("empty", {"content": b"", "headers": stream}, 400, "INVALID_ARGUMENT", "empty"),
        ("bad image", {"content": b"\x89PNG\r\n\x1a\nnot really", "headers": image},
         400, "INVALID_ARGUMENT", ""),
        ("wrong type", {"content": x.good, "headers": {"content-type": "text/plain"}},
         415, "UNSUPPORTED_MEDIA_TYPE", "text/plain"),
        ("too large", {"content": big, "headers": image},
         413, "PAYLOAD_TOO_LARGE", str(max_upload)),
        ("too large, chunked", {"content": chunks, "headers": image},
         413, "PAYLOAD_TOO_LARGE", str(max_upload)),
        ("no file field", {"files": {"other": ("a.png", png(8, 8), "image/png")}},
         400, "INVALID_ARGUMENT", "file"),
        ("unknown task", {"content": x.good, "headers": stream, "params": {"task": "astrology"}},
         400, "INVALID_ARGUMENT", "astrology"),
        ("bad quality", {"content": x.good, "headers": stream, "params": {"quality": "-3"}},
         400, "INVALID_ARGUMENT", "quality"),
        ("other weights", {"content": x.foreign, "headers": stream},
         409, "FAILED_PRECONDITION", "does not hold"),
        ("missing task weights",
         {"content": x.good, "headers": stream, "params": {"task": "detection"}},
         503, "UNAVAILABLE", x.detection_file),
    ]  # fmt: skip


def grpc_problems(
    call: Callable[[Any], object], cases: Sequence[tuple[str, Any, grpc.StatusCode, str]]
) -> list[str]:
    """Run ``call(request)`` per case; list those not failing with the status and text."""
    problems = []
    for name, request, status, text in cases:
        try:
            call(request)
            problems.append(f"{name}: succeeded")
        except grpc.RpcError as exc:
            details = exc.details() or ""
            if exc.code() != status or text not in details:
                problems.append(f"{name}: {exc.code()} {details!r}")
    return problems
