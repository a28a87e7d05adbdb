"""Window partitioning and the size-only masks of shifted-window attention.

Everything here depends only on feature-map sizes, so results are cached: the
reference implementation rebuilt these masks on every call, which costs more
than the attention itself on small feature maps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar

import torch
from torch import Tensor

# The reference marks cross-region pairs with -100 rather than -inf; softmax of
# -100 is not exactly zero, so the value is part of the function being matched.
MASKED_LOGIT = -100.0
T = TypeVar("T")


def window_partition(x: Tensor, window: int) -> Tensor:
    """(B, H, W, C) -> (B * H/w * W/w, w * w, C), windows in row-major order per image."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_reverse(windows: Tensor, window: int, h: int, w: int) -> Tensor:
    """Inverse of :func:`window_partition`: (B * nW, w * w, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    b = windows.shape[0] // ((h // window) * (w // window))
    x = windows.view(b, h // window, w // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


def _region_labels(h: int, w: int, window: int, shift: int) -> Tensor:
    """Label each pixel of the cyclically shifted map with the region it came from.

    Built with the reference's slice arithmetic, including its behaviour at
    ``shift == 0`` (where the last slice covers everything and all labels agree).
    """
    labels = torch.zeros(1, h, w, 1)
    bounds = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    count = 0
    for hs in bounds:
        for ws in bounds:
            labels[:, hs, ws, :] = count
            count += 1
    return labels


@lru_cache(maxsize=256)
def shifted_window_mask(h: int, w: int, window: int, shift: int) -> Tensor:
    """Additive mask (nW, w*w, w*w) keeping attention inside each original region."""
    labels = window_partition(_region_labels(h, w, window, shift), window).squeeze(-1)
    diff = labels.unsqueeze(1) - labels.unsqueeze(2)
    return torch.where(diff != 0, MASKED_LOGIT, 0.0)


@lru_cache(maxsize=256)
def instance_prompt_mask(h: int, w: int, window: int, shift: int, downsample: int) -> Tensor:
    """Mask for windows whose keys are ``(window/d)^2`` prompt tokens followed by the image tokens.

    The reference builds it by concatenating the image mask with a nearest-neighbour
    resample of its middle columns, *without* shifting the image columns past the
    prompt columns. The columns are therefore offset from the keys they describe;
    reproducing that offset exactly is what lets released checkpoints decode the same.
    """
    base = shifted_window_mask(h, w, window, shift)
    tokens = window * window
    prompts = (window // downsample) ** 2
    if downsample == 1:
        return torch.cat([base, base], dim=2)
    middle = base[:, :, prompts : tokens - prompts]
    # nearest-neighbour resize of `middle` to `prompts` columns picks every k-th column
    step = middle.shape[-1] / prompts
    picks = torch.tensor([int(j * step) for j in range(prompts)])
    return torch.cat([base, middle[:, :, picks]], dim=2)


@lru_cache(maxsize=256)
def window_order(h: int, w: int, window: int, shift: int) -> tuple[Tensor, Tensor]:
    """Token permutations for "cyclic shift, then partition into windows" and its inverse.

    ``x[:, order]`` on (B, H*W, C) tokens equals ``window_partition(roll(x, -shift))``
    flattened, in one gather instead of two full copies.
    """
    rows = (torch.arange(h) + shift) % h
    cols = (torch.arange(w) + shift) % w
    grid = (rows[:, None] * w + cols[None, :]).view(1, h, w, 1)
    order = window_partition(grid, window).reshape(-1)
    return order, torch.argsort(order)


@dataclass(frozen=True)
class WindowMask:
    """An additive attention mask (nW, T, S) and the windows where it is not all zero.

    For shifted windows only the last row and column of windows mix regions, so
    fused attention can run every window with the position bias alone and redo just
    those few with the mask.
    """

    values: Tensor
    border: Tensor


_device_cache: dict[tuple[object, ...], object] = {}


def _cached(key: tuple[object, ...], build: Callable[[], T]) -> T:
    cached = _device_cache.get(key)
    if cached is None:
        if len(_device_cache) > 1024:
            _device_cache.clear()
        cached = build()
        _device_cache[key] = cached
    return cached  # type: ignore[return-value]


def cached_mask(key: tuple[object, ...], build: Callable[[], Tensor], like: Tensor) -> WindowMask:
    """One :class:`WindowMask` per size, device and dtype."""

    def make() -> WindowMask:
        values = build()
        border = values.flatten(1).ne(0).any(1).nonzero().flatten()
        return WindowMask(values.to(like.device, like.dtype), border.to(like.device))

    return _cached(("mask", *key, like.device, like.dtype), make)


def cached_order(
    h: int, w: int, window: int, shift: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    return _cached(
        ("order", h, w, window, shift, device),
        lambda: tuple(t.to(device) for t in window_order(h, w, window, shift)),  # type: ignore[arg-type,return-value]
    )


def _identity(index: Tensor) -> bool:
    return bool(torch.equal(index, torch.arange(index.numel())))


@lru_cache(maxsize=256)
def stage_permutations(
    h: int, w: int, geometries: tuple[tuple[int, int], ...]
) -> tuple[tuple[Tensor | None, ...], Tensor | None]:
    """Token gathers that keep a Swin stage's residual stream in window order.

    ``geometries`` holds each block's (window, shift). Step ``i`` carries the tokens from
    block ``i-1``'s window order (raster order for ``i = 0``) into block ``i``'s, and the
    last entry back to raster order; ``None`` where the order does not change. One gather
    per block instead of a gather into and one out of window order.
    """
    steps: list[Tensor | None] = []
    previous_inverse: Tensor | None = None  # None: raster order
    for window, shift in geometries:
        order, inverse = window_order(h, w, window, shift)
        step = order if previous_inverse is None else previous_inverse[order]
        steps.append(None if _identity(step) else step)
        previous_inverse = inverse
    assert previous_inverse is not None
    back = None if _identity(previous_inverse) else previous_inverse
    return tuple(steps), back


def cached_stage_permutations(
    h: int, w: int, geometries: tuple[tuple[int, int], ...], device: torch.device
) -> tuple[tuple[Tensor | None, ...], Tensor | None]:
    def build() -> tuple[tuple[Tensor | None, ...], Tensor | None]:
        steps, back = stage_permutations(h, w, geometries)
        moved = tuple(None if s is None else s.to(device) for s in steps)
        return moved, None if back is None else back.to(device)

    return _cached(("stage", h, w, geometries, device), build)
