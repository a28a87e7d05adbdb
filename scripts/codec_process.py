"""A coding path in a process of its own, timed there and driven round by round.

Process-wide settings (``transtic.allocator``, the kernel libraries' instruction-set
caps of ``isa_caps``) would otherwise reach every path run in one interpreter. A child
per path runs each the way its users do, and is the only way to give a path capped
libraries: the caps must be in the environment before the child loads torch.

A path is a picklable *runner factory*: called in the child with its arguments, it
returns a function image -> (encode (wall s, CPU s), decode (wall s, CPU s), stream
bytes, decoded (3,H,W) image), the times measured in the child.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

Seconds = tuple[float, float]  # (wall clock, CPU time of the process, all threads)
RoundResult = tuple[Seconds, Seconds, int, Tensor]
Runner = Callable[[Tensor], RoundResult]


def clocks() -> Seconds:
    """(wall clock, CPU time of this process over all its threads), in seconds."""
    return time.perf_counter(), time.process_time()


def timed_round(
    encode: Callable[[], Any], decode: Callable[[Any], Tensor], size: Callable[[Any], int]
) -> RoundResult:
    start = clocks()
    stream = encode()
    mid = clocks()
    image = decode(stream)
    end = clocks()
    encode_s = (mid[0] - start[0], mid[1] - start[1])
    return encode_s, (end[0] - mid[0], end[1] - mid[1]), size(stream), image


class OurRunner:
    """Our ImageCodec on a private copy of the weights (fixed-point entropy parameters);
    ``attention`` overrides the attention implementation ImageCodec picks."""

    def __init__(
        self, state_dict: dict[str, Tensor], precision: str, attention: str | None = None
    ) -> None:
        from transtic.bitstream import EntropyParamMode
        from transtic.codec import ImageCodec
        from transtic.models import load_checkpoint

        self.codec = ImageCodec(
            load_checkpoint(state_dict),
            precision=precision,
            entropy_mode=EntropyParamMode.FIXED_POINT,
        )
        if attention:  # on the transforms the codec runs, which pick their own
            self.codec._transforms.set_attention_impl(attention)
        self.precision = self.codec.precision  # what "auto" resolved to, in this process

    def __call__(self, image: Tensor) -> RoundResult:
        return timed_round(
            lambda: self.codec.encode(image),
            lambda enc: self.codec.decode(enc.data).image,
            lambda enc: len(enc.data),
        )


class CodecProcess:
    """``factory(*args)`` built in a spawned child with environment ``env``."""

    def __init__(
        self,
        factory: Callable[..., Runner],
        args: tuple[Any, ...],
        image: Tensor,
        *,
        threads: int,
        retain_memory: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> None:
        import multiprocessing

        from isa_caps import process_environment

        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_serve,
            args=(child, factory, args, image, threads, retain_memory),
            daemon=True,
        )
        if env is None:
            self._process.start()
        else:
            with process_environment(env):
                self._process.start()
        child.close()
        # what the child's libraries use and which precision its runner resolved to
        self.report: dict[str, Any] = self._expect("ready")

    def _expect(self, what: str) -> Any:
        try:
            kind, value = self._conn.recv()
        except EOFError:
            raise RuntimeError("coding process exited before answering") from None
        if kind != what:
            raise RuntimeError(f"coding process: {value}")
        return value

    def run_once(self) -> RoundResult:
        self._conn.send("run")
        return self._expect("result")  # type: ignore[no-any-return]

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):  # the child may have died
            self._conn.send("stop")
        self._process.join(timeout=30)
        if self._process.is_alive():
            self._process.terminate()


def _serve(
    conn: Any,
    factory: Callable[..., Runner],
    args: tuple[Any, ...],
    image: Tensor,
    threads: int,
    retain_memory: bool,
) -> None:
    torch.set_num_threads(threads)
    if retain_memory:
        from transtic.allocator import retain_freed_memory

        retain_freed_memory()
    try:
        from isa_caps import kernel_report

        run = factory(*args)
        report = kernel_report()
        report["precision"] = getattr(run, "precision", None)
    except BaseException as exc:  # report, then let the parent raise
        conn.send(("error", repr(exc)))
        return
    conn.send(("ready", report))
    while True:
        try:
            if conn.recv() != "run":
                return
        except EOFError:  # the parent has gone
            return
        try:
            result = run(image)
        except Exception as exc:  # a path that cannot run here: the parent reports it
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
            return
        conn.send(("result", result))
