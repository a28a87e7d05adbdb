"""Range decoding in a child process, so a hostile stream cannot take the service down.

CompressAI's rANS decoder (C++) trusts its input: it reads past the end of a short
or corrupt string and can loop for long on crafted bypass codes. Fuzzing our
decoder with valid containers carrying random payloads crashed the interpreter
with a segmentation fault. Decoding therefore runs in a worker process; if the
worker dies or overruns its time budget, the caller gets a ``BitstreamError`` and
a fresh worker takes over. Encoding (our own data) stays in process.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from ..bitstream import BitstreamError

# Generous: an honest 4K frame decodes in well under a second.
BASE_TIMEOUT_S = 10.0
TIMEOUT_S_PER_SYMBOL = 2e-6


class IsolatedRansDecoder:
    """Drop-in for CompressAI's entropy coder proxy with decoding out of process."""

    name = "ans"

    def __init__(self) -> None:
        from compressai import ans

        self._encoder = ans.RansEncoder()
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._send: Connection | None = None
        self._recv: Connection | None = None
        self._known: set[bytes] = set()

    def encode_with_indexes(self, *args: Any, **kwargs: Any) -> Any:
        return self._encoder.encode_with_indexes(*args, **kwargs)

    def _start(self) -> None:
        if self._process is not None and self._process.poll() is None:
            return
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "transtic._rans_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert self._process.stdin is not None and self._process.stdout is not None
        self._send = Connection(os.dup(self._process.stdin.fileno()), readable=False)
        self._recv = Connection(os.dup(self._process.stdout.fileno()), writable=False)
        self._process.stdin.close()
        self._process.stdout.close()
        self._known.clear()
        self._receive(BASE_TIMEOUT_S * 3, "start")

    def _restart(self) -> None:
        for conn in (self._send, self._recv):
            if conn is not None:
                conn.close()
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=5)
        self._process = self._send = self._recv = None

    def _receive(self, timeout: float, what: str) -> Any:
        assert self._recv is not None
        if not self._recv.poll(timeout):
            self._restart()
            raise BitstreamError(f"bitstream: entropy decoding timed out ({what}; corrupt stream?)")
        try:
            _, value = self._recv.recv()
        except (EOFError, OSError):
            self._restart()
            raise BitstreamError("bitstream: entropy decoding failed (corrupt stream)") from None
        return value

    def _call(self, message: tuple[Any, ...], timeout: float) -> Any:
        assert self._send is not None
        self._send.send(message)
        return self._receive(timeout, message[0])

    def decode_with_indexes(
        self,
        string: bytes,
        indexes: list[int],
        cdfs: list[list[int]],
        lengths: list[int],
        offsets: list[int],
    ) -> np.ndarray:
        table = np.asarray(cdfs, dtype=np.int32)
        key = hashlib.sha1(
            table.tobytes()
            + np.asarray(lengths, np.int32).tobytes()
            + np.asarray(offsets, np.int32).tobytes()
        ).digest()
        timeout = BASE_TIMEOUT_S + TIMEOUT_S_PER_SYMBOL * len(indexes)
        with self._lock:
            try:
                self._start()
                if key not in self._known:
                    self._call(("tables", key, cdfs, lengths, offsets), BASE_TIMEOUT_S)
                    self._known.add(key)
                return self._call(("decode", key, bytes(string), indexes), timeout)
            except (BrokenPipeError, ConnectionResetError, OSError):
                self._restart()
                raise BitstreamError(
                    "bitstream: entropy decoding failed (corrupt stream)"
                ) from None

    def close(self) -> None:
        with self._lock:
            self._restart()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: best effort
            self._restart()


def isolate_entropy_decoding(model: Any, decoder: IsolatedRansDecoder | None = None) -> None:
    """Route ``model``'s range decoding through an isolated worker."""
    coder = decoder or IsolatedRansDecoder()
    model.entropy_bottleneck.entropy_coder = coder
    model.gaussian_conditional.entropy_coder = coder
