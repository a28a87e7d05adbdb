"""Two analytics replicas share one PostgreSQL store behind a load balancer.

A stream runs through a TCP forwarder (the "Service") to replica A; mid-stream A is
frozen with frames in flight, the forwarder cuts the connection and sends the
client's reconnect to replica B, and A is resumed, so both replicas may finish the
same frames concurrently. The database's dedupe key must keep every frame stored
exactly once, with one result that both replicas read back.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_helpers import (
    Analytics,
    free_port,
    metric,
    read_summary,
    stored_frames,
    stream_client,
    write_frames,
)
from tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration

N_FRAMES = 14
CLIENT_TIMEOUT_S = 300.0


@pytest.fixture
def replicas(
    codec_checkpoint: Path, postgres_server: Any, tmp_path: Path
) -> Iterator[tuple[Analytics, Analytics]]:
    url = postgres_server.create_database("replicas")
    cache = tmp_path / "weights"
    cache.mkdir()
    pair = tuple(
        Analytics(
            codec_checkpoint,
            tmp_path / f"unused-{name}.db",  # db_url wins over the SQLite path
            cache,
            tmp_path / f"analytics-{name}.log",
            extra=["--db-url", url],
        )
        for name in "ab"
    )
    try:
        for replica in pair:
            replica.start()
        for replica in pair:
            replica.wait_ready()
        yield pair[0], pair[1]
    finally:
        for replica in pair:
            if replica.alive:
                replica.signal(signal.SIGCONT)
            replica.stop()


def test_stream_moves_to_another_replica_and_stays_exactly_once(
    replicas: tuple[Analytics, Analytics], codec_checkpoint: Path, tmp_path: Path
) -> None:
    a, b = replicas
    write_frames(tmp_path / "frames", N_FRAMES, 96, 128)
    proxy = TcpProxy(a.target)
    metrics_url = f"http://127.0.0.1:{free_port()}/metrics"
    client = stream_client(
        codec=codec_checkpoint,
        cache_dir=tmp_path / "weights",
        source=tmp_path / "frames",
        target=proxy.target,
        stream_id="moving",
        summary=tmp_path / "summary.json",
        log_path=tmp_path / "client.log",
        extra=[
            "--fps", "4", "--pace",
            "--reconnect-initial-s", "0.2", "--reconnect-max-s", "1",
            "--drain-timeout-s", "200", "--ack-timeout-s", "20",
            "--stream-metrics-port", metrics_url.split(":")[2].split("/")[0],
        ],
    ).start()  # fmt: skip
    counts = {"sent": 0.0, "acked": 0.0}

    def client_reached(sent_over_acked: int, acked: int) -> bool:
        try:
            text = httpx.get(metrics_url, timeout=2).text
        except httpx.HTTPError:
            return False
        for key in counts:
            counts[key] = metric(text, f"transtic_stream_frames_{key}_total")
        return counts["acked"] >= acked and counts["sent"] >= counts["acked"] + sent_over_acked

    try:
        client.wait_until(lambda: client_reached(0, 3), CLIENT_TIMEOUT_S, "3 acks from A")
        a.signal(signal.SIGSTOP)  # A holds what it received; nothing more is acknowledged
        client.wait_until(lambda: client_reached(2, 3), CLIENT_TIMEOUT_S, "frames in flight")
        proxy.switch(b.target)
        a.signal(signal.SIGCONT)  # A finishes its in-flight frames while B gets the resends
        assert client.wait(CLIENT_TIMEOUT_S) == 0, client.fail("stream client failed")
    finally:
        client.stop()
        proxy.close()

    summary = read_summary(tmp_path / "summary.json")
    frames = summary["frames"]
    assert summary["error"] is None and summary["drained"], summary
    assert frames["encoded"] == N_FRAMES and frames["unacked"] == frames["errors"] == 0, frames
    assert frames["acked"] + frames["duplicates"] == N_FRAMES, frames
    assert summary["connections"] >= 2 and proxy.connections >= 2, summary

    from_a, from_b = stored_frames(a.url, "moving"), stored_frames(b.url, "moving")
    assert [f["sequence"] for f in from_a] == list(range(N_FRAMES))
    assert from_a == from_b  # one stored result per frame, the same from either replica
    for replica in (a, b):
        (listing,) = httpx.get(f"{replica.url}/v1/streams", timeout=10).json()["streams"]
        assert listing["frames_total"] == listing["frames_stored"] == N_FRAMES, listing
    # Both replicas took part: A stored the first frames, B the later ones.
    stored_by = [
        metric(replica.metrics(), "transtic_analytics_frames_total", {"api": "stream"})
        for replica in (a, b)
    ]
    assert stored_by[0] >= 3 and stored_by[1] >= 1, stored_by
