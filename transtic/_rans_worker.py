"""Child process that runs CompressAI's rANS decoder on untrusted strings.

Started by :mod:`transtic.entropy.isolated` as ``python -m transtic._rans_worker``.
It imports only numpy and the compiled ``ans`` extension (not torch), so it starts
fast and a crash here costs nothing but a restart.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np


def _load_ans() -> Any:
    spec = importlib.util.find_spec("compressai")
    if spec is None or spec.origin is None:
        raise ImportError("compressai is not installed")
    found = sorted(Path(spec.origin).parent.glob("ans*.so")) + sorted(
        Path(spec.origin).parent.glob("ans*.pyd")
    )
    if not found:
        raise ImportError("compressai's compiled ans extension is missing")
    loader = importlib.machinery.ExtensionFileLoader("compressai.ans", str(found[0]))
    module_spec = importlib.util.spec_from_loader("compressai.ans", loader)
    assert module_spec is not None
    module = importlib.util.module_from_spec(module_spec)
    loader.exec_module(module)
    return module


def serve(conn_in: Connection, conn_out: Connection) -> None:
    decoder = _load_ans().RansDecoder()
    tables: dict[bytes, tuple[Any, Any, Any]] = {}
    conn_out.send(("ready", None))
    while True:
        try:
            message = conn_in.recv()
        except EOFError:
            return
        if message[0] == "tables":
            _, key, cdfs, lengths, offsets = message
            if len(tables) > 16:
                tables.clear()
            tables[key] = (cdfs, lengths, offsets)
            conn_out.send(("ok", None))
        else:
            _, key, string, indexes = message
            cdfs, lengths, offsets = tables[key]
            values = decoder.decode_with_indexes(string, indexes, cdfs, lengths, offsets)
            conn_out.send(("ok", np.asarray(values, dtype=np.int32)))


if __name__ == "__main__":
    serve(
        Connection(sys.stdin.fileno(), writable=False),
        Connection(sys.stdout.fileno(), readable=False),
    )
