"""CompressAI entropy models with the state-dict names of the released checkpoints."""

from __future__ import annotations

import math
import re
import warnings
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

with warnings.catch_warnings():
    # compressai scripts a helper with the deprecated torch.jit at import time
    warnings.simplefilter("ignore", FutureWarning)
    from compressai.entropy_models import EntropyBottleneck as _CompressAIBottleneck
    from compressai.entropy_models import GaussianConditional

# Scale table of Ballé et al. (log-uniform between these bounds), used by the paper.
SCALES_MIN = 0.11
SCALES_MAX = 256.0
SCALES_LEVELS = 64

_MODERN = re.compile(r"^(matrices|biases|factors)\.(\d+)$")
_LEGACY = re.compile(r"^_(matrix|bias|factor)(\d+)$")
_TO_LEGACY = {"matrices": "_matrix", "biases": "_bias", "factors": "_factor"}
_TO_MODERN = {"matrix": "matrices", "bias": "biases", "factor": "factors"}


def get_scale_table(
    min_scale: float = SCALES_MIN, max_scale: float = SCALES_MAX, levels: int = SCALES_LEVELS
) -> torch.Tensor:
    return torch.exp(torch.linspace(math.log(min_scale), math.log(max_scale), levels))


class EntropyBottleneck(_CompressAIBottleneck):
    """Factorized prior that reads and writes ``_matrix{i}/_bias{i}/_factor{i}`` keys.

    CompressAI >= 1.2 keeps these in ParameterLists (``matrices.{i}``); the paper's
    fork and its checkpoints use flat names. Saving in the flat layout, in the
    fork's order, lets the official tools read our files.
    """

    def __init__(self, channels: int, **kwargs: Any) -> None:
        super().__init__(channels, **kwargs)
        self._register_state_dict_hook(_save_legacy_names)
        self._register_load_state_dict_pre_hook(_accept_legacy_names)


def _save_legacy_names(
    module: nn.Module, state: OrderedDict[str, Any], prefix: str, _meta: Any
) -> None:
    own = [k for k in state if k.startswith(prefix)]
    entries = {k[len(prefix) :]: state.pop(k) for k in own}
    ordered: list[tuple[str, Any]] = []
    for i in range(len(module.matrices)):  # type: ignore[arg-type]
        for group in ("matrices", "biases", "factors"):
            key = f"{group}.{i}"
            if key in entries:
                ordered.append((f"{_TO_LEGACY[group]}{i}", entries.pop(key)))
    ordered.extend(entries.items())
    for key, value in ordered:
        state[prefix + key] = value


def _accept_legacy_names(state: dict[str, Any], prefix: str, *_args: Any) -> None:
    for key in [k for k in state if k.startswith(prefix)]:
        match = _LEGACY.match(key[len(prefix) :])
        if match:
            state[f"{prefix}{_TO_MODERN[match.group(1)]}.{match.group(2)}"] = state.pop(key)


def legacy_to_modern_key(key: str) -> str:
    """``entropy_bottleneck._matrix0`` -> ``entropy_bottleneck.matrices.0`` (others unchanged)."""
    head, _, tail = key.rpartition(".")
    match = _LEGACY.match(tail)
    if not match:
        return key
    new = f"{_TO_MODERN[match.group(1)]}.{match.group(2)}"
    return f"{head}.{new}" if head else new


__all__ = ["EntropyBottleneck", "GaussianConditional", "get_scale_table", "legacy_to_modern_key"]
