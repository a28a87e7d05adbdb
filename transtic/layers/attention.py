"""Window multi-head self-attention with relative position bias and prepended prompts."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .windows import WindowMask

AttentionImpl = Literal["eager", "sdpa", "native"]
ATTENTION_IMPLS: tuple[str, ...] = ("eager", "sdpa", "native")

# Windows attended per step. Bounds the (windows, heads, T, S) logits tensor, which
# for a 1 MP image at the first stage would otherwise be ~0.6 GB.
WINDOW_CHUNK = 512


def relative_position_index(window: int) -> Tensor:
    """(T, T) index into the (2w-1)^2 bias table for every query/key pair of a window."""
    coords = torch.stack(
        torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    ).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


class WindowAttention(nn.Module):
    """W-MSA over ``window x window`` tokens, optionally preceded by ``P`` prompt tokens.

    Prompt tokens act only as keys and values: queries come from image tokens, so the
    output has one row per image token. Prompt columns get zero position bias.
    """

    def __init__(self, dim: int, window: int, num_heads: int) -> None:
        super().__init__()
        self.dim = dim
        self.window = window
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window - 1) ** 2, num_heads)
        )
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.impl: AttentionImpl = "eager"
        self._kernel_bias: dict[tuple[int, int], tuple[tuple[int, int], Tensor]] = {}
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def position_bias(self, num_prompts: int) -> Tensor:
        tokens = self.window * self.window
        index = self.relative_position_index.reshape(-1)  # type: ignore[operator]
        bias = self.relative_position_bias_table[index].view(tokens, tokens, -1)
        bias = bias.permute(2, 0, 1)
        if num_prompts:
            bias = F.pad(bias, (num_prompts, 0))
        return bias

    def forward(
        self, windows: Tensor, *, num_prompts: int = 0, mask: WindowMask | None = None
    ) -> Tensor:
        """windows: (B*nW, P+T, C); mask: additive (nW, T, P+T) or None -> (B*nW, T, C)."""
        bw, seq, c = windows.shape
        heads = self.num_heads
        qkv = self.qkv(windows).reshape(bw, seq, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0][:, :, num_prompts:], qkv[1], qkv[2]
        bias = self.position_bias(num_prompts).to(q.dtype)
        if self.impl == "eager":  # "native" without its kernel also lands on SDPA
            values = mask.values if mask is not None else None
            out = _eager_attention(q, k, v, bias, values, self.scale)
        else:
            out = _fused_attention(q, k, v, bias, mask, self.scale)
        return self.proj(out.transpose(1, 2).reshape(bw, seq - num_prompts, c))


def _fused_attention(
    q: Tensor, k: Tensor, v: Tensor, bias: Tensor, mask: WindowMask | None, scale: float
) -> Tensor:
    """SDPA with the position bias for all windows, then the masked border windows again."""
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.unsqueeze(0), scale=scale)
    if mask is None or mask.border.numel() == 0:
        return out
    nw = mask.values.shape[0]
    images = q.shape[0] // nw
    rows = (torch.arange(images, device=q.device)[:, None] * nw + mask.border[None]).reshape(-1)
    full = mask.values.index_select(0, mask.border).to(q.dtype).unsqueeze(1) + bias
    full = full.repeat(images, 1, 1, 1)
    fixed = F.scaled_dot_product_attention(q[rows], k[rows], v[rows], attn_mask=full, scale=scale)
    if out.requires_grad:
        # autograd saved `out` for SDPA's backward, so it must not be overwritten
        return out.index_copy(0, rows, fixed)
    return out.index_copy_(0, rows, fixed)  # out is SDPA's fresh result: no copy needed


def _eager_attention(
    q: Tensor, k: Tensor, v: Tensor, bias: Tensor, mask: Tensor | None, scale: float
) -> Tensor:
    """softmax((q * scale) k^T + bias + mask) v, as the reference computes it, chunked.

    q: (B*nW, h, T, d); k, v: (B*nW, h, S, d); bias: (h, T, S); mask: (nW, T, S).
    """
    nw = mask.shape[0] if mask is not None else 1
    images = q.shape[0] // nw
    step = WINDOW_CHUNK
    outs = []
    for start in range(0, q.shape[0], step):
        sl = slice(start, start + step)
        logits = (q[sl] * scale) @ k[sl].transpose(-2, -1) + bias
        if mask is not None:
            # windows are image-major: row r belongs to window r % nW
            index = torch.arange(start, min(start + step, images * nw), device=q.device) % nw
            logits = logits + mask.to(q.dtype).index_select(0, index).unsqueeze(1)
        outs.append(logits.softmax(dim=-1) @ v[sl])
    return torch.cat(outs) if len(outs) > 1 else outs[0]


def inference_linear(
    layer: nn.Module, x: Tensor, post_op: str = "none", *, outputs: slice | None = None
) -> Tensor:
    """``layer(x)`` (then GELU for ``post_op="gelu"``) in one oneDNN call where it can.

    For a plain float Linear on the CPU without autograd, oneDNN adds the bias and
    applies the activation inside the GEMM: no separate pass over the output, which at
    the first stages is 10-25 % of a Linear's time. Quantised layers keep their kernels.
    ``outputs`` keeps only those output features, and a plain Linear computes no others.
    """
    if type(layer) is nn.Linear:
        weight: Tensor = layer.weight
        bias: Tensor | None = layer.bias
        if outputs is not None:
            weight, bias = weight[outputs], bias[outputs] if bias is not None else None
        if _onednn_ok(x):
            key = "weight" if outputs is None else f"weight[{outputs.start}:{outputs.stop}]"
            packed = packed_weight(layer, weight, key)
            return torch.ops.mkldnn._linear_pointwise(x, packed, bias, post_op, [], "none")
        out = F.linear(x, weight, bias)
    else:
        out = layer(x) if outputs is None else layer(x)[..., outputs]
    return F.gelu(out) if post_op == "gelu" else out


def _onednn_ok(x: Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and not torch.is_grad_enabled()
        and torch.backends.mkldnn.is_available()
        and (x.dtype == torch.float32 or (x.dtype == torch.bfloat16 and _onednn_bf16()))
    )


@functools.lru_cache(maxsize=1)
def _onednn_bf16() -> bool:
    """oneDNN has bf16 kernels only from AVX-512 up (and not when capped below it): without
    them a bf16 oneDNN linear fails outright, so bf16 then takes PyTorch's own kernels."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


class _PackedWeights(dict[str, tuple[tuple[int, int, torch.dtype], Tensor]]):
    """Per-module cache of packed weights; copies of the module start without it (oneDNN's
    opaque tensors cannot be copied or pickled, and are rebuilt on first use anyway)."""

    def __deepcopy__(self, memo: dict[int, object]) -> _PackedWeights:
        return _PackedWeights()

    def __reduce__(self) -> tuple[type, tuple[()]]:
        return (_PackedWeights, ())


# Rows per call the packed layout is chosen for (the native block pass's chunk size).
PACKING_ROWS = 4096


def packed_weight(layer: nn.Module, weight: Tensor, key: str = "weight") -> Tensor:
    """``weight`` reordered once into oneDNN's blocked layout, cached on ``layer``.

    With a plain weight oneDNN reorders it on every call, which costs as much as a
    small GEMM. Rebuilt when the weight changes (in-place updates bump its version).
    """
    cache = layer.__dict__.setdefault("_onednn_packed", _PackedWeights())
    version = (weight._version, weight.data_ptr(), weight.dtype)
    cached = cache.get(key)
    if cached is None or cached[0] != version:
        cached = (version, torch.ops.mkldnn._reorder_linear_weight(weight, PACKING_ROWS))
        cache[key] = cached
    return cached[1]


def native_usable(x: Tensor) -> bool:
    """The native kernel runs CPU inference on float32 or bf16 tokens (float32 arithmetic);
    anything else keeps SDPA."""
    return (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.bfloat16)
        and not torch.is_grad_enabled()
    )


class NativeWindowAttention:
    """Inputs of :func:`transtic.kernels.window_attention` built from a WindowAttention.

    Kept apart from the module so that its caches (key-major bias, border masks) are
    plain attributes, not state-dict entries.
    """

    def __init__(self, attn: WindowAttention) -> None:
        self.attn = attn

    def bias(self, num_prompts: int, tokens: int) -> Tensor:
        """(heads, P + T, padded T) key-major position bias, rebuilt when the table changes."""
        from ..kernels.attention import padded_queries

        table = self.attn.relative_position_bias_table
        version = (table._version, table.data_ptr())
        cached = self.attn._kernel_bias.get((num_prompts, tokens))
        if cached is not None and cached[0] == version:
            return cached[1]
        bias = self.attn.position_bias(num_prompts).float().transpose(1, 2)
        bias = F.pad(bias, (0, padded_queries(tokens) - tokens)).contiguous()
        self.attn._kernel_bias[(num_prompts, tokens)] = (version, bias)
        return bias

    def prompt_keys_values(self, prompts: Tensor) -> Tensor:
        """(rows, >= 2C) keys and values of prompt tokens; their queries are never used."""
        return inference_linear(self.attn.qkv, prompts, outputs=slice(self.attn.dim, None))

    def prepare(
        self,
        *,
        prompts: Tensor | None,
        num_prompts: int,
        prompt_div: int,
        mask: WindowMask | None,
        dtype: torch.dtype,
    ) -> NativeCall:
        """What every chunk of one block's windows shares: prompt keys/values, bias, mask."""
        t = self.attn.window * self.attn.window
        kv = None
        if prompts is not None:
            kv = self.prompt_keys_values(prompts.to(dtype))
        masks = slots = None
        if mask is not None and mask.border.numel():
            masks, slots = _key_major_mask(mask, t)
        return NativeCall(kv, num_prompts if kv is not None else 0, prompt_div, masks, slots)

    def __call__(self, normed: Tensor, call: NativeCall, first_window: int = 0) -> Tensor:
        """Normalised tokens (rows, C) of whole windows in window order -> projected (rows, C)."""
        from ..kernels.attention import window_attention

        attn = self.attn
        t = attn.window * attn.window
        out = window_attention(
            inference_linear(attn.qkv, normed),
            tokens_per_window=t,
            heads=attn.num_heads,
            scale=attn.scale,
            bias=self.bias(call.num_prompts, t),
            prompts=call.prompt_keys_values,
            num_prompts=call.num_prompts,
            prompt_div=call.prompt_div,
            masks=call.masks,
            mask_slot=call.mask_slots,
            first_window=first_window,
        )
        return inference_linear(attn.proj, out)


@dataclass(frozen=True)
class NativeCall:
    prompt_keys_values: Tensor | None
    num_prompts: int
    prompt_div: int
    masks: Tensor | None
    mask_slots: Tensor | None


_kernel_masks: dict[int, tuple[WindowMask, Tensor, Tensor]] = {}


def _key_major_mask(mask: WindowMask, tokens: int) -> tuple[Tensor, Tensor]:
    """The border windows' masks key-major, and each window's slot among them (-1: none)."""
    from ..kernels.attention import padded_queries

    cached = _kernel_masks.get(id(mask))
    if cached is not None and cached[0] is mask:
        return cached[1], cached[2]
    border = mask.border.cpu()
    values = mask.values.index_select(0, mask.border).float().cpu().transpose(1, 2)
    values = F.pad(values, (0, padded_queries(tokens) - tokens)).contiguous()
    slots = torch.full((mask.values.shape[0],), -1, dtype=torch.int32)
    slots[border] = torch.arange(border.numel(), dtype=torch.int32)
    if len(_kernel_masks) > 256:
        _kernel_masks.clear()
    _kernel_masks[id(mask)] = (mask, values, slots)  # holding `mask` keeps its id unique
    return values, slots
