"""Load generators and measurements for ``test_load.py``.

Edge streams use the encoder service's own streaming code in-process (``ResendBuffer`` +
``StreamSender``: reconnects, resends, retries of refused frames), fed with bitstreams
coded once up front, so the load lands on the analytics process and not on test-side
encoding. REST clients are threads posting bitstreams with httpx. Everything is bounded
by a frame or request count and a deadline.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np

from services.encoder.resend import PendingFrame, ResendBuffer
from services.encoder.sender import AckEvent, Backoff, StreamSender
from services.generated.transtic.v1 import api_pb2

RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]


# -- measurements ---------------------------------------------------------------------------
def proc_status_mb(pid: int, key: str) -> float:
    """A memory line of /proc/<pid>/status (VmRSS, VmHWM) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


class RssSampler:
    """Samples a process's resident memory every ``period_s`` while running."""

    def __init__(self, pid: int, period_s: float = 0.2) -> None:
        self.pid = pid
        self.period_s = period_s
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(proc_status_mb(self.pid, "VmRSS"))
            self._stop.wait(self.period_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def peak_mb(self) -> float:
        return max(self.samples, default=0.0)


def percentiles_ms(latencies_s: Sequence[float]) -> dict[str, float]:
    if not latencies_s:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    values = np.asarray(latencies_s) * 1e3
    return {
        "p50_ms": round(float(np.percentile(values, 50)), 1),
        "p99_ms": round(float(np.percentile(values, 99)), 1),
        "max_ms": round(float(values.max()), 1),
    }


# -- edge streams ---------------------------------------------------------------------------
@dataclass
class StreamRun:
    stream_id: str
    count: int
    sender: StreamSender
    sent_at: dict[int, float] = field(default_factory=dict)
    latencies_s: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    acked: Counter[int] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_send(self, pending: PendingFrame) -> None:
        with self.lock:
            self.sent_at.setdefault(pending.sequence, time.perf_counter())

    def on_ack(self, event: AckEvent) -> None:
        with self.lock:
            self.outcomes[event.outcome] += 1
            if event.ack.error_code == RESOURCE_EXHAUSTED:
                self.outcomes["refused_resource_exhausted"] += 1
            if event.outcome in ("ok", "duplicate"):
                self.acked[event.sequence] += 1
                sent = self.sent_at.get(event.sequence)
                if sent is not None:
                    self.latencies_s.append(time.perf_counter() - sent)


def start_stream(target: str, stream_id: str, bitstreams: Sequence[bytes]) -> StreamRun:
    """Queue every frame, then start the sender thread; the buffer is closed (drains)."""
    buffer = ResendBuffer(capacity=len(bitstreams))
    now_ms = int(time.time() * 1000)
    for seq, data in enumerate(bitstreams):
        frame = api_pb2.Frame(
            stream_id=stream_id,
            sequence=seq,
            bitstream=data,
            task="classification",
            capture_time_unix_ms=now_ms + seq,
        )
        assert buffer.put(frame, timeout=1.0)
    buffer.close()
    run = StreamRun(stream_id, len(bitstreams), sender=None)  # type: ignore[arg-type]
    run.sender = StreamSender(
        target,
        buffer,
        stream_id,
        backoff=Backoff(initial_s=0.1, max_s=1.0),
        max_attempts=5,
        ack_timeout_s=60.0,
        frame_max_retries=20,  # a busy cloud refuses frames for a while: retry, never drop
        on_ack=run.on_ack,
        on_send=run.on_send,
    )
    run.sender.start()
    return run


# -- REST clients ---------------------------------------------------------------------------
@dataclass
class RestStats:
    latencies_s: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    retry_after: list[str] = field(default_factory=list)
    bad_answers: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, response: httpx.Response, elapsed: float) -> None:
        with self.lock:
            self.statuses[response.status_code] += 1
            if response.status_code == 200:
                self.latencies_s.append(elapsed)
            elif response.status_code == 429:
                self.retry_after.append(response.headers.get("retry-after", ""))
                if response.json()["error"]["code"] != "RESOURCE_EXHAUSTED":
                    self.bad_answers.append(response.text)
            else:
                self.bad_answers.append(f"{response.status_code} {response.text[:300]}")


def rest_client(
    url: str,
    bitstream: bytes,
    requests: int,
    deadline: float,
    stats: RestStats,
    refused_pause_s: float | None = None,
) -> None:
    """Post until ``requests`` analyses succeeded or ``deadline`` (time.monotonic) passed.

    After a 429 the client waits ``Retry-After`` (capped at 1 s), or ``refused_pause_s``
    when given (a flood that ignores the advice)."""
    done = 0
    with httpx.Client(base_url=url, timeout=120.0) as client:
        while done < requests and time.monotonic() < deadline:
            start = time.perf_counter()
            try:
                response = client.post(
                    "/v1/analyze",
                    params={"task": "classification"},
                    content=bitstream,
                    headers={"content-type": "application/x-transtic"},
                )
            except httpx.HTTPError as exc:
                with stats.lock:
                    stats.bad_answers.append(f"transport error: {exc!r}")
                continue
            stats.record(response, time.perf_counter() - start)
            if response.status_code == 200:
                done += 1
            elif response.status_code == 429:
                advised = min(1.0, float(response.headers.get("retry-after", "1")))
                time.sleep(advised if refused_pause_s is None else refused_pause_s)


def start_threads(targets: Sequence[tuple[Any, tuple[Any, ...]]]) -> list[threading.Thread]:
    threads = [threading.Thread(target=fn, args=args, daemon=True) for fn, args in targets]
    for thread in threads:
        thread.start()
    return threads


def join_threads(threads: Sequence[threading.Thread], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    alive = [t.name for t in threads if t.is_alive()]
    assert not alive, f"load threads still running after {timeout_s:.0f} s: {alive}"


def run_threads(targets: Sequence[tuple[Any, tuple[Any, ...]]], timeout_s: float) -> None:
    join_threads(start_threads(targets), timeout_s)
