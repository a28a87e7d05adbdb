"""Swin Transformer blocks and the residual stage (RSTB) used by TIC and TransTIC.

Module and parameter names follow the paper's released checkpoints
(``residual_group.blocks.{i}.attn.qkv`` ...), so state dicts load unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import NativeWindowAttention, WindowAttention, inference_linear, native_usable
from .windows import (
    WindowMask,
    cached_mask,
    cached_order,
    cached_stage_permutations,
    instance_prompt_mask,
    shifted_window_mask,
)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        # Inference on CPU: GELU applied inside fc1's oneDNN kernel, saving a pass over
        # the widest activation (set by set_fused_inference).
        self.fuse_gelu = False

    def forward(self, x: Tensor) -> Tensor:
        if self.fuse_gelu:
            return inference_linear(self.fc2, inference_linear(self.fc1, x, "gelu"))
        return self.fc2(self.act(self.fc1(x)))


# Tokens per chunk of the native block pass: the block's intermediates for this many
# tokens (~12 floats per channel) stay within the caches, and every GEMM is still large
# enough for oneDNN to run at full speed.
NATIVE_CHUNK_TOKENS = 4096


def _native_kernel_ready() -> bool:
    from ..kernels.attention import available

    return available()


def block_geometry(reference_size: int, window: int, shift: int) -> tuple[int, int]:
    """Window and shift a block uses, fixed at construction from the training resolution.

    Stages whose training-time map is no larger than a window attend over the whole
    map without shifting; the released models were built this way, so later inputs
    of any size keep that choice.
    """
    if reference_size <= window:
        return reference_size, 0
    return window, shift


class SwinBlock(nn.Module):
    """One (shifted-)window attention block with optional prompts.

    Two prompt kinds are supported, as in TransTIC:
    - ``shared_prompts`` (B, P, C): learned task tokens prepended to every window;
    - ``instance_prompts`` (B, H*W/d^2, C): a prompt map at 1/d resolution, windowed
      alongside the image so each window sees its own (window/d)^2 prompt tokens.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window: int,
        shift: int,
        reference_resolution: tuple[int, int],
        mlp_ratio: float = 2.0,
        instance_prompt_downsample: int = 0,
    ) -> None:
        super().__init__()
        self.window, self.shift = block_geometry(min(reference_resolution), window, shift)
        self.downsample = instance_prompt_downsample
        if self.shift > 0:
            # Kept only so checkpoints keep their keys; masks are rebuilt per size.
            mask = shifted_window_mask(*reference_resolution, self.window, self.shift)
            self.register_buffer("attn_mask", mask.clone())
        else:
            self.attn_mask = None
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, self.window, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        # Stochastic depth for training (set_drop_path); a plain float, so the state
        # dict keeps the released checkpoints' keys.
        self.drop_path_rate = 0.0

    def _drop_path(self, branch: Tensor) -> Tensor:
        """Drop the residual branch for whole samples at ``drop_path_rate`` (training only)."""
        if not self.training or self.drop_path_rate <= 0.0:
            return branch
        keep = 1.0 - self.drop_path_rate
        mask = branch.new_empty(branch.shape[0], *([1] * (branch.ndim - 1))).bernoulli_(keep)
        return branch * mask / keep

    def _mask(self, h: int, w: int, num_prompts: int, like: Tensor) -> WindowMask | None:
        if self.shift == 0:
            return None
        win, s, d = self.window, self.shift, self.downsample
        if d:
            return cached_mask(
                ("inst", h, w, win, s, d), lambda: instance_prompt_mask(h, w, win, s, d), like
            )
        return cached_mask(
            ("pad", h, w, win, s, num_prompts),
            lambda: F.pad(shifted_window_mask(h, w, win, s), (num_prompts, 0)),
            like,
        )

    def _instance_prompts_by_window(
        self, instance_prompts: Tensor, size: tuple[int, int]
    ) -> tuple[Tensor, int]:
        """The prompt map's tokens grouped by window (B, nW * P, C), and P per window."""
        h, w = size
        d, win, s = self.downsample, self.window, self.shift
        m_order, _ = cached_order(h // d, w // d, win // d, s // d, instance_prompts.device)
        return instance_prompts.index_select(1, m_order), (win // d) ** 2

    def _attend(
        self,
        normed: Tensor,
        size: tuple[int, int],
        shared_prompts: Tensor | None,
        instance_prompts: Tensor | None,
    ) -> Tensor:
        """Window attention over tokens already in this block's window order."""
        h, w = size
        b, _, c = normed.shape
        windows = normed.view(-1, self.window**2, c)
        prompts = 0
        if instance_prompts is not None:
            m_tokens, prompts = self._instance_prompts_by_window(instance_prompts, size)
            m_windows = m_tokens.view(-1, prompts, c)
            windows = torch.cat([m_windows, windows.to(m_windows.dtype)], dim=1)
        elif shared_prompts is not None:
            prompts = shared_prompts.shape[1]
            per_image = windows.shape[0] // b
            tokens = shared_prompts.to(windows.dtype).unsqueeze(1).expand(b, per_image, prompts, c)
            windows = torch.cat([tokens.reshape(-1, prompts, c), windows], dim=1)
        out = self.attn(windows, num_prompts=prompts, mask=self._mask(h, w, prompts, windows))
        return out.view(b, h * w, c)

    def _forward_native(
        self,
        x: Tensor,
        size: tuple[int, int],
        shared_prompts: Tensor | None,
        instance_prompts: Tensor | None,
    ) -> Tensor:
        """:meth:`forward_in_window_order` with the native attention kernel, a chunk of
        whole windows at a time, so every intermediate of the block stays in the CPU's
        caches instead of making a round trip through memory per operator. Prompts are
        not concatenated to every window, and their keys and values are computed once."""
        h, w = size
        b, _, c = x.shape
        tokens = self.window**2
        windows_per_image = (h // self.window) * (w // self.window)
        prompts, prompt_div, num_prompts = None, 1, 0
        if instance_prompts is not None:
            m_tokens, num_prompts = self._instance_prompts_by_window(instance_prompts, size)
            prompts = m_tokens.reshape(-1, c)
        elif shared_prompts is not None:
            num_prompts = shared_prompts.shape[1]
            prompts = shared_prompts.reshape(-1, c)
            prompt_div = windows_per_image
        attention = NativeWindowAttention(self.attn)
        call = attention.prepare(
            prompts=prompts,
            num_prompts=num_prompts,
            prompt_div=prompt_div,
            mask=self._mask(h, w, num_prompts, x),
            dtype=x.dtype,
        )
        rows = x.view(-1, c)
        step = max(1, NATIVE_CHUNK_TOKENS // tokens)
        for first in range(0, b * windows_per_image, step):
            chunk = rows[first * tokens : (first + step) * tokens]
            chunk += attention(self.norm1(chunk), call, first)
            chunk += self.mlp(self.norm2(chunk))
        return x

    def forward(
        self,
        x: Tensor,
        size: tuple[int, int],
        *,
        shared_prompts: Tensor | None = None,
        instance_prompts: Tensor | None = None,
    ) -> Tensor:
        """x: (B, H*W, C) tokens in raster order -> same shape."""
        order, inverse = cached_order(*size, self.window, self.shift, x.device)
        normed = self.norm1(x).index_select(1, order)
        out = self._attend(normed, size, shared_prompts, instance_prompts)
        x = x + self._drop_path(out.index_select(1, inverse))
        return x + self._drop_path(self.mlp(self.norm2(x)))

    def forward_in_window_order(
        self,
        x: Tensor,
        size: tuple[int, int],
        *,
        shared_prompts: Tensor | None = None,
        instance_prompts: Tensor | None = None,
    ) -> Tensor:
        """Inference on tokens already in this block's window order (returned in it too).

        Every step but attention works token by token, so it gives what :meth:`forward`
        gives, permuted, without forward's two full gathers. x is updated in place.
        """
        if self.attn.impl == "native" and native_usable(x) and _native_kernel_ready():
            return self._forward_native(x, size, shared_prompts, instance_prompts)
        x += self._attend(self.norm1(x), size, shared_prompts, instance_prompts)
        x += self.mlp(self.norm2(x))
        return x


class SwinStage(nn.Module):
    """A sequence of alternating plain/shifted blocks ("BasicLayer" in the checkpoints)."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window: int,
        reference_resolution: tuple[int, int],
        mlp_ratio: float = 2.0,
        num_task_prompts: int = 0,
        instance_prompt_downsample: int = 0,
    ) -> None:
        super().__init__()
        self.prompt_embeddings: nn.Parameter | None = None
        if num_task_prompts:
            # Deep prompting: each block gets its own learned tokens.
            bound = (6.0 / (3 + dim)) ** 0.5
            self.prompt_embeddings = nn.Parameter(
                torch.empty(depth, num_task_prompts, dim).uniform_(-bound, bound)
            )
        self.blocks = nn.ModuleList(
            SwinBlock(
                dim,
                num_heads,
                window,
                0 if i % 2 == 0 else window // 2,
                reference_resolution,
                mlp_ratio,
                instance_prompt_downsample,
            )
            for i in range(depth)
        )

        # Inference keeps the residual stream in window order (set_fused_inference).
        self.window_order_stream = False

    def _prompts(
        self, i: int, x: Tensor, instance_prompts: Sequence[Tensor] | None
    ) -> dict[str, Tensor | None]:
        shared = None
        if self.prompt_embeddings is not None:
            shared = self.prompt_embeddings[i].expand(x.shape[0], -1, -1)
        inst = instance_prompts[i] if instance_prompts is not None else None
        return {"shared_prompts": shared, "instance_prompts": inst}

    def forward(
        self,
        x: Tensor,
        size: tuple[int, int],
        instance_prompts: Sequence[Tensor] | None = None,
    ) -> Tensor:
        if self.window_order_stream and not torch.is_grad_enabled():
            return self._forward_in_window_order(x, size, instance_prompts)
        for i, block in enumerate(self.blocks):
            x = block(x, size, **self._prompts(i, x, instance_prompts))
        return x

    def _forward_in_window_order(
        self, x: Tensor, size: tuple[int, int], instance_prompts: Sequence[Tensor] | None
    ) -> Tensor:
        """One token gather per block (and one back) instead of two per block."""
        blocks: list[SwinBlock] = list(self.blocks)  # type: ignore[arg-type]
        geometries = tuple((block.window, block.shift) for block in blocks)
        steps, back = cached_stage_permutations(*size, geometries, x.device)
        # the stage owns its stream from here on: a gather copies, else copy explicitly
        first = steps[0]
        x = x.clone() if first is None else x.index_select(1, first)
        for i, block in enumerate(blocks):
            step = steps[i]
            if i and step is not None:
                x = x.index_select(1, step)
            x = block.forward_in_window_order(x, size, **self._prompts(i, x, instance_prompts))
        return x if back is None else x.index_select(1, back)


class RSTB(nn.Module):
    """Residual Swin Transformer Block: a Swin stage on feature maps plus a skip.

    Takes the arguments of :class:`SwinStage`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.residual_group = SwinStage(*args, **kwargs)

    @property
    def depth(self) -> int:
        return len(self.residual_group.blocks)

    def forward(self, x: Tensor, instance_prompts: Sequence[Tensor] | None = None) -> Tensor:
        b, c, h, w = x.shape
        # NHWC token order: a free view when x is channels_last
        tokens = x.permute(0, 2, 3, 1).reshape(b, h * w, c)
        maps = None
        if instance_prompts is not None:
            maps = [m.permute(0, 2, 3, 1).reshape(b, -1, c) for m in instance_prompts]
        out = self.residual_group(tokens, (h, w), maps).view(b, h, w, c).permute(0, 3, 1, 2)
        if torch.is_grad_enabled() or out.data_ptr() == x.data_ptr():
            return out + x
        return out.add_(x)  # the stage's output is its own fresh tensor: add in place


def set_drop_path(model: nn.Module, rate: float) -> int:
    """Stochastic depth rising linearly from 0 to ``rate`` over the model's Swin blocks
    in module order (as Swin and TIC assign it); returns the number of blocks."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"drop-path rate must be in [0, 1), got {rate}")
    blocks = [m for m in model.modules() if isinstance(m, SwinBlock)]
    for i, block in enumerate(blocks):
        block.drop_path_rate = rate * i / max(1, len(blocks) - 1)
    return len(blocks)


def set_fused_inference(model: nn.Module, enabled: bool) -> None:
    """Inference-only fast paths of the Swin stages (no effect while autograd records).

    The residual stream stays in window order across blocks, and the MLP's GELU runs
    inside fc1's oneDNN kernel. Results equal the reference path's up to float rounding.
    """
    for module in model.modules():
        if isinstance(module, SwinStage):
            module.window_order_stream = enabled
        elif isinstance(module, Mlp):
            module.fuse_gelu = enabled
