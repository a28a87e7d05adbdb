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
import types
from pathlib import Path
from typing import Any

import torch
from codec_process import RoundResult, Runner, timed_round
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


def official_runner(source: str, state_dict: dict[str, Tensor]) -> Runner:
    """The official codec as a ``codec_process`` runner (built in its own process)."""
    codec = OfficialCodec(Path(source), state_dict)

    def run(image: Tensor) -> RoundResult:
        x = image.float().div(255)[None]  # 768x512 is a multiple of 256: no alignment needed
        return timed_round(
            lambda: codec.encode(x),
            lambda enc: codec.decode(enc["strings"], enc["shape"])[0],
            lambda enc: len(enc["strings"][0][0]) + len(enc["strings"][1][0]),
        )

    return run
