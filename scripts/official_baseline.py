"""Load the paper's own TransTIC code from a checkout the user points to, as a timing baseline.

The official repository (github.com/NYCU-MAPL/TransTIC) ships a modified CompressAI
1.2.0 as a package named ``compressai``, which clashes with the installed CompressAI
this project uses. It is imported here under the same name but in isolation: the
installed package's modules are set aside in ``sys.modules``, the fork is imported with
the installed package's compiled extensions (``_CXX``, ``ans``) standing in for the
fork's unbuilt ones, and then everything is put back. The fork's modules keep working
because each holds references to its own imports. Nothing of that code is copied here;
none of its files are edited.
"""

from __future__ import annotations

import importlib
import sys
import time
import types
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

# The official classification/detection configs (config/classification.yaml), as the
# conformance vectors in ../shared/conformance were made with.
PROMPT_CONFIG = {
    "ARCHITECT": "both",
    "NUM_TOKENS": 16,
    "DEEP": True,
    "WINDOW": "same",
    "LOCATION": "prepend",
    "MASK_DOWNSAMPLE": 2,
    "MODEL_DECODER": False,
    "DECODER_BLOCK": [1, 2, 3, 4],
    "HYPERPRIOR": False,
    "RETURN_ATTENTION": False,
    "INITIATION": "random",
    "DROPOUT": 0.0,
    "PROJECT": -1,
}
_COMPILED = ("compressai._CXX", "compressai.ans")


def _is_compressai(name: str) -> bool:
    return name == "compressai" or name.startswith("compressai.")


def import_official_model_class(source: Path) -> type[nn.Module]:
    """``TIC_PromptModel_first2`` from the checkout at ``source``."""
    if not (source / "compressai/models/tic_promptmodel.py").is_file():
        raise SystemExit(
            f"{source} is not a TransTIC checkout (no compressai/models/tic_promptmodel.py)"
        )
    for name in _COMPILED:
        importlib.import_module(name)
    ours = {k: m for k, m in sys.modules.items() if _is_compressai(k)}
    for name in ours:
        del sys.modules[name]
    for name in _COMPILED:
        sys.modules[name] = ours[name]
    sys.path.insert(0, str(source))
    try:
        module = importlib.import_module("compressai.models.tic_promptmodel")
    finally:
        sys.path.remove(str(source))
        for name in [k for k in sys.modules if _is_compressai(k)]:
            del sys.modules[name]
        sys.modules.update(ours)
    return module.TIC_PromptModel_first2  # type: ignore[no-any-return]


class OfficialCodec:
    """The official model with our loaded weights; encode/decode as its compress() does."""

    def __init__(self, source: Path, state_dict: dict[str, Tensor]) -> None:
        cls = import_official_model_class(source)
        config = types.SimpleNamespace(**PROMPT_CONFIG)
        n, m = state_dict["g_a0.weight"].shape[0], state_dict["g_a6.weight"].shape[0]
        self.model = cls(N=n, M=m, prompt_config=config).eval()
        self.model.load_state_dict(
            {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}
        )

    @torch.no_grad()
    def encode(self, x: Tensor) -> dict[str, Any]:
        return self.model.compress(x)  # type: ignore[no-any-return]

    @torch.no_grad()
    def decode(self, strings: list[list[bytes]], shape: Any) -> Tensor:
        # The official decompress() unpacks g_s's (x, attentions) tuple wrongly and
        # raises; this is the computation it means (as ../shared/conformance notes).
        model = self.model
        z_hat = model.entropy_bottleneck.decompress(strings[1], shape)
        scales, means = model.h_s(z_hat).chunk(2, 1)
        indexes = model.gaussian_conditional.build_indexes(scales)
        y_hat = model.gaussian_conditional.decompress(strings[0], indexes, means=means)
        x_hat, _ = model.g_s(y_hat)
        return x_hat.clamp_(0, 1)


class OfficialProcess:
    """The official codec in a child process, timed there, driven round by round.

    Process-wide settings of ours (``transtic.allocator``) would otherwise speed up the
    official code too when both run in one interpreter; a separate process runs it the
    way its users do. ``retain_memory=True`` gives it our allocator setting as well,
    for a like-for-like comparison.
    """

    def __init__(
        self,
        source: Path,
        state_dict: dict[str, Tensor],
        image: Tensor,
        *,
        threads: int,
        retain_memory: bool = False,
    ) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_serve,
            args=(child, str(source), state_dict, image, threads, retain_memory),
            daemon=True,
        )
        self._process.start()
        child.close()
        self._expect("ready")

    def _expect(self, what: str) -> Any:
        kind, value = self._conn.recv()
        if kind != what:
            raise RuntimeError(f"official code process: {value}")
        return value

    def run_once(self) -> tuple[tuple[float, float], tuple[float, float], int, Tensor]:
        """Encode and decode (wall s, CPU s), stream bytes, decoded (3,H,W) image."""
        self._conn.send("run")
        return self._expect("result")  # type: ignore[no-any-return]

    def close(self) -> None:
        self._conn.send("stop")
        self._process.join(timeout=30)


def clocks() -> tuple[float, float]:
    """(wall clock, CPU time of this process over all its threads), in seconds."""
    return time.perf_counter(), time.process_time()


def _serve(
    conn: Any,
    source: str,
    state_dict: dict[str, Tensor],
    image: Tensor,
    threads: int,
    retain_memory: bool,
) -> None:
    torch.set_num_threads(threads)
    if retain_memory:
        from transtic.allocator import retain_freed_memory

        retain_freed_memory()
    try:
        codec = OfficialCodec(Path(source), state_dict)
    except BaseException as exc:  # report, then let the parent raise
        conn.send(("error", repr(exc)))
        return
    conn.send(("ready", None))
    x = image.float().div(255)[None]  # 768x512 is a multiple of 256: no alignment needed
    while True:
        try:
            if conn.recv() != "run":
                return
        except EOFError:  # the parent has gone
            return
        start = clocks()
        enc = codec.encode(x)
        mid = clocks()
        decoded = codec.decode(enc["strings"], enc["shape"])[0]
        end = clocks()
        size = len(enc["strings"][0][0]) + len(enc["strings"][1][0])
        encode = (mid[0] - start[0], mid[1] - start[1])
        decode = (end[0] - mid[0], end[1] - mid[1])
        conn.send(("result", (encode, decode, size, decoded)))
