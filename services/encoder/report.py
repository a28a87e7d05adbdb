"""Counters of a stream run and its end-of-run summary (log line and JSON)."""

from __future__ import annotations

import json
import logging
import statistics
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from .resend import PendingFrame
from .sender import AckEvent

if TYPE_CHECKING:
    from .streamer import StreamRun

log = logging.getLogger(__name__)

_REFUSED_LISTED = 100
_OUTCOME_KEYS = {
    "ok": "acked",
    "duplicate": "duplicates",
    "error": "errors",
    "retry": "retries",
    "stray": "stray_acks",
}


class StreamStats:
    """Counters shared by the reader thread and the sender thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.errors_by_code: Counter[str] = Counter()
        self.refused: list[dict[str, Any]] = []  # frames the analytics will not store
        self.encode_ms: list[float] = []
        self.bytes = 0

    def add(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    def add_encoded(self, nbytes: int, encode_ms: float) -> None:
        with self._lock:
            self.counts["encoded"] += 1
            self.bytes += nbytes
            self.encode_ms.append(encode_ms)

    def on_send(self, pending: PendingFrame) -> None:
        with self._lock:
            self.counts["sent"] += 1
            if pending.sends > 1:
                self.counts["resent"] += 1

    def on_ack(self, event: AckEvent) -> None:
        with self._lock:
            self.counts[_OUTCOME_KEYS[event.outcome]] += 1
            if event.outcome in ("error", "retry"):
                self.errors_by_code[code_name(event.ack.error_code)] += 1
            if event.outcome == "error" and len(self.refused) < _REFUSED_LISTED:
                self.refused.append(
                    {
                        "sequence": event.sequence,
                        "code": code_name(event.ack.error_code),
                        "message": event.ack.error_message,
                    }
                )


def code_name(value: int) -> str:
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return str(code.name)
    return str(value)


def build_summary(run: StreamRun, duration: float, drained: bool) -> dict[str, Any]:
    """The run's counters, rate and latency figures as one JSON-able dict."""
    c, rate, s = run.stats.counts, run.controller.stats, run.settings
    target = run.controller.target
    times = sorted(run.stats.encode_ms)
    unacked = run.buffer.pending_sequences()
    return {
        "stream_id": run.stream_id,
        "target": s.target,
        "task": s.task,
        "source": s.source,
        "stopped_by": run.stopped_by,
        "drained": drained,
        "error": run.sender.error,
        "duration_s": round(duration, 3),
        "frames": {
            k: c[k]
            for k in (
                "read",
                "read_errors",
                "encoded",
                "encode_errors",
                "queued",
                "dropped_unqueued",
                "sent",
                "resent",
                "acked",
                "duplicates",
                "errors",
                "retries",
                "stray_acks",
            )
        }
        | {"unacked": len(unacked)},
        "errors_by_code": dict(run.stats.errors_by_code),
        "refused": list(run.stats.refused),
        # the qualities rate control kept to (what the analytics holds); None: not checked
        "served_qualities": run.served.qualities,
        "connections": run.sender.connections,
        "bytes": run.stats.bytes,
        "rate": {
            "target": target.describe() if target else None,
            "target_bpp": rate.target_bpp if target else None,
            "target_kbps": target.kbps if target else None,
            "fps": s.fps,
            "achieved_bpp": rate.bpp,
            "achieved_kbps_at_fps": rate.kbps(s.fps),
            "wall_kbps": run.stats.bytes * 8 / 1000 / duration if duration > 0 else 0.0,
            "qualities": {str(q): n for q, n in sorted(rate.qualities.items())},
        },
        "encode_ms": {
            "mean": statistics.fmean(times) if times else 0.0,
            "p50": times[len(times) // 2] if times else 0.0,
            "p95": times[min(len(times) - 1, int(len(times) * 0.95))] if times else 0.0,
        },
        "unacked_sequences": unacked[:100],
    }


def report(summary: dict[str, Any], path: Path | None) -> None:
    """Log the one-line summary and write the JSON (to a file, or stdout for '-')."""
    f, r = summary["frames"], summary["rate"]
    log.log(
        logging.ERROR if f["errors"] or summary["error"] else logging.INFO,
        "stream %s done (%s): %d encoded, %d acked, %d duplicates, %d refused, %d unacked, "
        "%d connections; achieved %.4f bpp (target %s), %.1f kbit/s at %g fps",
        summary["stream_id"],
        summary["stopped_by"],
        f["encoded"],
        f["acked"],
        f["duplicates"],
        f["errors"],
        f["unacked"],
        summary["connections"],
        r["achieved_bpp"],
        r["target"] or "none",
        r["achieved_kbps_at_fps"],
        r["fps"],
    )
    if path is None:
        return
    text = json.dumps(summary, indent=2, sort_keys=True)
    if str(path) == "-":
        print(text, file=sys.stdout, flush=True)
    else:
        path.write_text(text + "\n")
