"""Which of the stream client's qualities the analytics side can decode.

The analytics decodes a frame only with the codec whose weights coded it (matched by the
weights fingerprint in the bitstream header) and refuses any other frame. So at every
connection the client asks its GetInfo which codecs are loaded, and rate control chooses
only among the qualities whose fingerprint is among them.
"""

from __future__ import annotations

import threading

from services.generated.transtic.v1 import api_pb2


class ServedCodecs:
    """Shared by the sender thread (which learns, per connection) and the reader thread
    (which waits for the first answer and picks up changes between frames)."""

    def __init__(
        self, fingerprints: dict[int, str] | None, task: str, fixed_quality: int | None = None
    ) -> None:
        # quality -> hex weights fingerprint; None when the encode function does not say
        # (then nothing can be checked and every quality is used)
        self.fingerprints = fingerprints
        self.task = task
        self.fixed_quality = fixed_quality
        self.qualities: list[int] | None = None  # None: not known (yet, or at all)
        self.known = threading.Event()
        self._lock = threading.Lock()
        self._changed = False
        if fingerprints is None:
            self.known.set()

    def update(self, info: api_pb2.ServiceInfo | None) -> str | None:
        """Take a GetInfo answer (None: the analytics does not implement it); return why
        this encoder cannot stream to that analytics, or None."""
        if self.fingerprints is None or info is None:
            self.known.set()
            return None
        if info.tasks and self.task not in info.tasks:
            return f"the analytics does not offer task {self.task!r} (it offers: " + (
                ", ".join(info.tasks) + ")"
            )
        held = {m.fingerprint for m in info.models if m.kind == "codec" and m.ready}
        served = sorted(q for q, fp in self.fingerprints.items() if fp and fp in held)
        if not served:
            ours = ", ".join(f"q{q}={fp}" for q, fp in sorted(self.fingerprints.items()))
            return (
                "the analytics holds none of this encoder's codecs "
                f"(encoder task {self.task}: {ours}; analytics weights: "
                f"{', '.join(sorted(held)) or 'none loaded'}): load the same weights on both"
            )
        if self.fixed_quality is not None and self.fixed_quality not in served:
            return (
                f"quality {self.fixed_quality} was asked for, but the analytics serves "
                f"{', '.join(map(str, served))} of this encoder's qualities"
            )
        with self._lock:
            if served != self.qualities:
                self.qualities = served
                self._changed = True
        self.known.set()
        return None

    def take_change(self) -> list[int] | None:
        """The served qualities if they changed since the last call, else None."""
        with self._lock:
            if not self._changed:
                return None
            self._changed = False
            return list(self.qualities or [])
