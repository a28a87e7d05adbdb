"""Python side of the native window-attention kernel (``window_attention.cpp``).

Inputs stay where the Swin block has them: the qkv rows of the window tokens (one
row per token, windows contiguous), the prompt rows (keys at 0, values at C), the
position bias and the mask; the output rows come back in the layout the projection
reads. Windows are split into contiguous ranges, one per PyTorch intra-op thread: on
the threads of PyTorch's own OpenMP runtime where the kernel is built with it, else on
a thread pool (ctypes releases the GIL). Every window is computed by one thread alone,
so the result does not depend on the number of threads.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from . import build
from .threads import run_split

QUERY_PAD = 16  # window_attention.cpp kQueryPad
_I64, _F32, _PTR = ctypes.c_int64, ctypes.c_float, ctypes.c_void_p
# transtic_window_attention(x, x_stride, prompts, prompt_stride, prompt_div, bias, masks,
# mask_slot, windows_per_image, out, out_stride, T, P, H, D, scale, bfloat16, w_begin, w_end,
# threads)
_ARGTYPES: list[Any] = [_PTR, _I64, _PTR, _I64, _I64, _PTR, _PTR, _PTR, _I64]
_ARGTYPES += [_PTR, _I64, _I64, _I64, _I64, _I64, _F32, _I64, _I64, _I64, _I64]
ROW_DTYPES = (torch.float32, torch.bfloat16)


@dataclass(frozen=True)
class Limits:
    max_keys: int
    max_head_dim: int
    openmp: bool  # spreads one call over threads itself (else: one call per thread)


def _declare(lib: ctypes.CDLL) -> Limits:
    """Sets the library's signatures; its limits."""
    lib.transtic_window_attention.argtypes = _ARGTYPES
    lib.transtic_window_attention.restype = ctypes.c_int
    for getter in ("max_keys", "max_head_dim", "openmp"):
        getattr(lib, f"transtic_attention_{getter}").restype = ctypes.c_int64
    return Limits(
        lib.transtic_attention_max_keys(),
        lib.transtic_attention_max_head_dim(),
        bool(lib.transtic_attention_openmp()),
    )


def _library() -> tuple[ctypes.CDLL, Limits] | None:
    return build.load_declared("window_attention", _declare)


def available() -> bool:
    """True once the kernel is built and loaded for this CPU (builds it on first call)."""
    return _library() is not None


def padded_queries(tokens: int) -> int:
    """Queries per window rounded up to whole vectors: the bias and mask row length."""
    return -(-tokens // QUERY_PAD) * QUERY_PAD


def _check_rows(name: str, t: Tensor, columns: int, dtype: torch.dtype | None = None) -> None:
    if t.device.type != "cpu" or t.dtype not in ROW_DTYPES:
        raise ValueError(f"{name} must be a float32 or bfloat16 CPU tensor")
    if dtype is not None and t.dtype != dtype:
        raise ValueError(f"{name} must have the dtype of qkv ({dtype})")
    if t.dim() != 2 or t.stride(1) != 1 or t.shape[1] < columns:
        raise ValueError(f"{name} must be rows of at least {columns} unit-stride columns")


def window_attention(
    qkv: Tensor,
    *,
    tokens_per_window: int,
    heads: int,
    scale: float,
    bias: Tensor,
    prompts: Tensor | None = None,
    num_prompts: int = 0,
    prompt_div: int = 1,
    masks: Tensor | None = None,
    mask_slot: Tensor | None = None,
    first_window: int = 0,
) -> Tensor:
    """Attention of every window; returns (rows, C) rows of qkv's dtype, one per token.

    Rows (qkv, prompts, output) are float32 or bfloat16; the arithmetic is float32.

    qkv: (windows * T, >= 3C) rows with q, k, v at columns 0, C, 2C, holding windows
    ``first_window, first_window + 1, ...`` of the batch (windows are image-major).
    bias: (heads, P + T, padded_queries(T)): key-major, zero in the prompt rows.
    prompts: (blocks * P, >= 2C) rows with keys at 0 and values at C for P = num_prompts;
    window w reads block ``w // prompt_div``.
    masks: (slots, P + T, padded_queries(T)) additive masks, key-major; mask_slot
    (windows per image,) int32 gives each window of an image its slot, or -1 for none.
    """
    loaded = _library()
    if loaded is None:
        raise build.KernelBuildError("the window-attention kernel is not available")
    lib, found = loaded
    _check_rows("qkv", qkv, 3)
    rows, t = qkv.shape[0], tokens_per_window
    channels = qkv.shape[1] // 3
    if qkv.shape[1] % 3 or rows % t or channels % heads:
        raise ValueError("qkv must be whole windows of rows with 3C columns, C a multiple of heads")
    windows = rows // t
    if first_window < 0:
        raise ValueError("first_window must be >= 0")
    if prompts is not None:
        _check_rows("prompts", prompts, 2 * channels, qkv.dtype)
        blocks = -(-(first_window + windows) // max(1, prompt_div))
        if prompt_div < 1 or num_prompts < 1 or prompts.shape[0] < blocks * num_prompts:
            raise ValueError("prompts must hold num_prompts rows for every window's block")
    else:
        num_prompts = 0
    keys = num_prompts + t
    head_dim = channels // heads
    if keys > found.max_keys or head_dim > found.max_head_dim:
        raise ValueError(f"{keys} keys x head width {head_dim} exceed the kernel's limits")
    if bias.shape != (heads, keys, padded_queries(t)) or not bias.is_contiguous():
        raise ValueError("bias must be a contiguous (heads, keys, padded queries) tensor")
    windows_per_image = 0
    if masks is not None:
        if mask_slot is None or mask_slot.dtype != torch.int32 or not masks.is_contiguous():
            raise ValueError("masks need a contiguous layout and an int32 mask_slot")
        if masks.shape != (masks.shape[0], keys, padded_queries(t)):
            raise ValueError("masks must be (slots, keys, padded queries)")
        windows_per_image = mask_slot.numel()
    out = torch.empty(rows, channels, dtype=qkv.dtype)
    # the kernel addresses rows by global window index: shift the bases back accordingly
    row_bytes = t * qkv.element_size()
    args = (
        qkv.data_ptr() - first_window * row_bytes * qkv.stride(0),
        qkv.stride(0),
        prompts.data_ptr() if prompts is not None else None,
        prompts.stride(0) if prompts is not None else 0,
        prompt_div,
        bias.data_ptr(),
        masks.data_ptr() if masks is not None else None,
        mask_slot.data_ptr() if mask_slot is not None else None,
        windows_per_image,
        out.data_ptr() - first_window * row_bytes * channels,
        channels,
        t,
        num_prompts,
        heads,
        head_dim,
        scale,
        int(qkv.dtype == torch.bfloat16),
    )
    call = functools.partial(lib.transtic_window_attention, *args)
    codes = run_split(call, first_window, first_window + windows, openmp=found.openmp)
    if any(codes):
        raise RuntimeError(f"window-attention kernel failed with codes {codes}")
    return out
