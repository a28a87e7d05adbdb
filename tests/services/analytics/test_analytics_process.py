"""``python -m services.analytics`` as a real process: serve, drain on SIGTERM, restart."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.generated.transtic.v1 import api_pb2, api_pb2_grpc

REPO = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    def __init__(self, codec: Path, db: Path, log: Path) -> None:
        self.http, self.grpc = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRANSTIC_ANALYTICS_")}
        env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), TRANSTIC_ANALYTICS_DB_PATH=str(db))
        self.log = log.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "services.analytics",
                "--codec-checkpoint", str(codec),
                "--task-backends", "classification",
                "--http-port", str(self.http),
                "--grpc-port", str(self.grpc),
                "--device", "cpu",
                "--shutdown-grace-s", "20",
            ],
            cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{self.http}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"service did not become ready:\n{log.read_text()}")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        finally:
            self.log.close()


@pytest.fixture
def start(codec_checkpoint: Path, tmp_path: Path) -> Iterator[Callable[[], Service]]:
    started: list[Service] = []

    def make() -> Service:
        service = Service(codec_checkpoint, tmp_path / "frames.db", tmp_path / "service.log")
        started.append(service)
        return service

    yield make
    for service in started:
        if service.proc.poll() is None:
            service.proc.kill()
            service.proc.wait()


def frame(seq: int, data: bytes) -> api_pb2.Frame:
    return api_pb2.Frame(stream_id="edge-7", sequence=seq, bitstream=data, capture_time_unix_ms=5)


def test_serves_drains_on_sigterm_and_keeps_results_across_restart(
    start: Callable[[], Service], bitstream: bytes, make_png: Callable[..., bytes]
) -> None:
    service = start()
    with grpc.insecure_channel(f"127.0.0.1:{service.grpc}") as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        stub = api_pb2_grpc.AnalyticsStub(channel)
        (ack,) = stub.AnalyzeStream(iter([frame(0, bitstream)]), timeout=60)
        assert not ack.duplicate and ack.error_code == 0

    # An upload large enough to be in flight when SIGTERM arrives must still complete.
    big = make_png(256, 256, seed=9)
    outcome: dict[str, httpx.Response] = {}

    def upload() -> None:
        outcome["r"] = httpx.post(
            f"{service.url}/v1/analyze", content=big, headers={"content-type": "image/png"},
            timeout=60,
        )  # fmt: skip

    client = threading.Thread(target=upload)
    client.start()
    time.sleep(0.3)
    assert service.stop() == 0
    client.join(60)
    assert outcome["r"].status_code == 200, outcome["r"].text
    assert outcome["r"].json()["width"] == 256

    restarted = start()
    with grpc.insecure_channel(f"127.0.0.1:{restarted.grpc}") as channel:
        stub = api_pb2_grpc.AnalyticsStub(channel)
        (again,) = stub.AnalyzeStream(iter([frame(0, bitstream)]), timeout=60)
    assert again.duplicate and again.result == ack.result
    listing = httpx.get(f"{restarted.url}/v1/streams", timeout=10).json()["streams"]
    assert listing[0]["stream_id"] == "edge-7" and listing[0]["latest"]["capture_time_unix_ms"] == 5
    assert restarted.stop() == 0
