"""Python side of the Winograd 3x3 convolution kernel (``winograd_conv.cpp``).

The weights are transformed once (:func:`transform_weights`); every call then takes
a channels-last float32 image and returns the convolution (stride 1, padding 1) plus
bias, optionally through a ReLU, channels-last too.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any

import torch
from torch import Tensor

from . import build
from .threads import run_split

_I64, _PTR = ctypes.c_int64, ctypes.c_void_p
# transtic_winograd_conv3x3(x, C1, x2, N, H, W, Cin, u, bias, Cout, relu, out, tile,
# row_begin, row_end, threads)
_ARGTYPES: list[Any] = [_PTR, _I64, _PTR, _I64, _I64, _I64, _I64, _PTR, _PTR, _I64, _I64]
_ARGTYPES += [_PTR, _I64, _I64, _I64, _I64]

# G of F(tile x tile, 3x3): a 3-tap filter -> its tile + 2 values in the transformed domain
_FILTER_TRANSFORMS = {
    2: ((1, 0, 0), (1 / 2, 1 / 2, 1 / 2), (1 / 2, -1 / 2, 1 / 2), (0, 0, 1)),
    4: (
        (1 / 4, 0, 0),
        (-1 / 6, -1 / 6, -1 / 6),
        (-1 / 6, 1 / 6, -1 / 6),
        (1 / 24, 1 / 12, 1 / 6),
        (1 / 24, -1 / 12, 1 / 6),
        (0, 0, 1),
    ),
}
TILES = tuple(_FILTER_TRANSFORMS)


def _declare(lib: ctypes.CDLL) -> tuple[int, bool]:
    """Sets the library's signatures; (vector lanes: the channel multiple, built with OpenMP)."""
    lib.transtic_winograd_conv3x3.argtypes = _ARGTYPES
    lib.transtic_winograd_conv3x3.restype = ctypes.c_int
    lib.transtic_winograd_lanes.restype = ctypes.c_int64
    lib.transtic_winograd_openmp.restype = ctypes.c_int64
    return lib.transtic_winograd_lanes(), bool(lib.transtic_winograd_openmp())


def _library() -> tuple[ctypes.CDLL, int, bool] | None:
    loaded = build.load_declared("winograd_conv", _declare)
    return None if loaded is None else (loaded[0], *loaded[1])


def available() -> bool:
    """True once the kernel is built and loaded for this CPU (builds it on first call)."""
    return _library() is not None


def channel_multiple() -> int:
    """Input and output channel counts the kernel takes are multiples of this (0: no kernel)."""
    loaded = _library()
    return 0 if loaded is None else loaded[1]


def transform_weights(weight: Tensor, tile: int = 2) -> Tensor:
    """(Cout, Cin, 3, 3) conv weights -> ((tile + 2)^2, Cin, Cout) float32 for F(tile x tile,
    3x3): G g G^T per channel pair, computed in float64 and rounded once."""
    if weight.dim() != 4 or weight.shape[-2:] != (3, 3):
        raise ValueError("Winograd F(m x m, 3x3) needs (Cout, Cin, 3, 3) weights")
    if tile not in _FILTER_TRANSFORMS:
        raise ValueError(f"output tiles of {TILES} pixels, not {tile}")
    g = torch.tensor(_FILTER_TRANSFORMS[tile], dtype=torch.float64)
    u = g @ weight.detach().to("cpu", torch.float64) @ g.T  # (Cout, Cin, T, T)
    cout, cin = weight.shape[:2]
    return u.permute(2, 3, 1, 0).reshape((tile + 2) ** 2, cin, cout).float().contiguous()


def _check_input(name: str, x: Tensor) -> None:
    if x.device.type != "cpu" or x.dtype != torch.float32 or x.dim() != 4:
        raise ValueError(f"{name} must be a (N, C, H, W) float32 CPU tensor")
    if not x.is_contiguous(memory_format=torch.channels_last):
        raise ValueError(f"{name} must be channels-last contiguous")


def conv3x3(
    x: Tensor,
    transformed: Tensor,
    bias: Tensor | None,
    *,
    relu: bool,
    concatenated: Tensor | None = None,
) -> Tensor:
    """3x3 convolution, stride 1, padding 1 (+ bias, then ReLU if asked) of a
    channels-last float32 CPU batch (N, Cin, H, W) -> (N, Cout, H, W) channels-last, by
    F(m x m, 3x3) with the m the weights were transformed for (:func:`transform_weights`).

    ``concatenated``: a second batch whose channels follow x's, as if the input were
    ``torch.cat([x, concatenated], 1)`` (without making that tensor).
    """
    loaded = _library()
    if loaded is None:
        raise build.KernelBuildError("the Winograd convolution kernel is not available")
    lib, lanes, openmp = loaded
    _check_input("x", x)
    n, first, h, w = x.shape
    cin = first
    if concatenated is not None:
        _check_input("concatenated", concatenated)
        if concatenated.shape[0] != n or concatenated.shape[2:] != x.shape[2:]:
            raise ValueError("concatenated must match x in batch size, height and width")
        cin += concatenated.shape[1]
    tile = {(m + 2) ** 2: m for m in TILES}.get(transformed.shape[0], 0)
    if not tile or transformed.shape[1] != cin or transformed.dtype != torch.float32:
        raise ValueError(f"transformed weights must be (16 or 36, {cin}, Cout) float32")
    if not transformed.is_contiguous():
        raise ValueError("transformed weights must be contiguous")
    cout = transformed.shape[2]
    if first % lanes or cin % lanes or cout % lanes:
        raise ValueError(f"channel counts must be multiples of {lanes}")
    if bias is not None and (bias.shape != (cout,) or bias.dtype != torch.float32):
        raise ValueError(f"bias must be ({cout},) float32")
    if bias is not None:
        bias = bias.contiguous()
    out = torch.empty(n, cout, h, w, memory_format=torch.channels_last)
    if out.numel() == 0:
        return out
    second = concatenated.data_ptr() if concatenated is not None else None
    bias_ptr = bias.data_ptr() if bias is not None else None
    call = functools.partial(
        lib.transtic_winograd_conv3x3,
        *(x.data_ptr(), first, second, n, h, w, cin, transformed.data_ptr()),
        *(bias_ptr, cout, int(relu), out.data_ptr(), tile),
    )
    codes = run_split(call, 0, n * -(-h // tile), openmp=openmp)
    if any(codes):
        raise RuntimeError(f"Winograd convolution kernel failed with codes {codes}")
    return out
