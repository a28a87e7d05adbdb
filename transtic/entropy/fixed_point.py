"""Machine-independent entropy parameters: the hyper-synthesis in exact arithmetic.

The rANS decoder needs, for every latent element, the very same scale index the
encoder used; one flipped index desynchronises the rest of the stream. Computing
``h_s`` with :mod:`transtic.entropy.exact_ops` makes scales and means a pure
function of the decoded hyper-latent and the weights, whatever the CPU, thread
count or GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import RSTB, SwinBlock
from ..layers.windows import shifted_window_mask, window_partition, window_reverse
from . import exact_ops as ops

ACT_LIMIT = 2.0**12  # activations are clamped here before every product
QK_LIMIT = 2.0**10
PROB_BITS = 20


@dataclass
class _Linear:
    w_int: Tensor
    w_scale: Tensor
    bias: Tensor | None

    @classmethod
    def of(cls, weight: Tensor, bias: Tensor | None) -> _Linear:
        w_int, w_scale = ops.quantize_weight(weight)
        b = bias.detach().to(torch.float64) if bias is not None else None
        return cls(w_int, w_scale, b)

    def __call__(self, x: Tensor) -> Tensor:
        return ops.exact_linear(x, self.w_int, self.w_scale, self.bias, ACT_LIMIT)


class _Deconv:
    """Transposed conv as one exact integer product per output phase (sub-pixel).

    A stride-s transposed conv equals zero insertion, padding and a plain conv; each of
    the s*s output phases only ever meets the taps that land on inserted input pixels,
    so those taps alone are multiplied (1/s^2 of the products). The activation grid is
    the one the whole k*k product would use, so the integer sums, and the results, are
    those of the zero-inserted product bit for bit.
    """

    def __init__(self, layer: nn.ConvTranspose2d) -> None:
        weight = layer.weight.detach().flip(2, 3).transpose(0, 1)
        k, s = weight.shape[-1], int(layer.stride[0])
        lo = k - 1 - int(layer.padding[0])
        full = _Linear.of(weight, layer.bias)
        self.stride, self.out_channels = s, weight.shape[0]
        self.w_scale, self.bias = full.w_scale, full.bias
        self.bits = ops.activation_bits(full.w_int.shape[1], ACT_LIMIT)
        w_int = full.w_int.view(weight.shape[0], -1, k, k)
        # per phase r: the taps d with (r + d - lo) % s == 0, reading input offset
        # (r + d - lo) // s onwards; the offsets of one phase are consecutive
        self.taps = [[d for d in range(k) if (r + d - lo) % s == 0] for r in range(s)]
        self.first = [(r + taps[0] - lo) // s for r, taps in enumerate(self.taps)]
        self.pad_before = max(0, -min(self.first))
        self.pad_after = max(f + len(t) - 1 for f, t in zip(self.first, self.taps, strict=True))
        self.phase_weights = {
            (ry, rx): w_int[:, :, ty][:, :, :, tx].reshape(w_int.shape[0], -1).contiguous()
            for ry, ty in enumerate(self.taps)
            for rx, tx in enumerate(self.taps)
        }

    def __call__(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        s, before, after = self.stride, self.pad_before, self.pad_after
        out = x.new_empty(b, self.out_channels, h * s, w * s)
        padded = F.pad(x, (before, after, before, after))
        for (ry, rx), w_phase in self.phase_weights.items():
            ny, nx = len(self.taps[ry]), len(self.taps[rx])
            y0, x0 = self.first[ry] + before, self.first[rx] + before
            window = padded[:, :, y0 : y0 + h + ny - 1, x0 : x0 + w + nx - 1]
            cols = F.unfold(window, (ny, nx)).transpose(1, 2)  # (B, h*w, C*ny*nx)
            phase = ops.exact_linear(cols, w_phase, self.w_scale, self.bias, ACT_LIMIT, self.bits)
            out[:, :, ry::s, rx::s] = phase.transpose(1, 2).reshape(b, -1, h, w)
        return out


class _Block:
    def __init__(self, block: SwinBlock) -> None:
        attn = block.attn
        self.window, self.shift, self.heads = block.window, block.shift, attn.num_heads
        self.norm1 = (block.norm1.weight.detach().double(), block.norm1.bias.detach().double())
        self.norm2 = (block.norm2.weight.detach().double(), block.norm2.bias.detach().double())
        self.eps = block.norm1.eps
        self.qkv = _Linear.of(attn.qkv.weight, attn.qkv.bias)
        self.proj = _Linear.of(attn.proj.weight, attn.proj.bias)
        self.fc1 = _Linear.of(block.mlp.fc1.weight, block.mlp.fc1.bias)
        self.fc2 = _Linear.of(block.mlp.fc2.weight, block.mlp.fc2.bias)
        self.position_bias = attn.position_bias(0).detach().double()
        head_dim = attn.dim // attn.num_heads
        # 1/sqrt is correctly rounded everywhere, unlike pow(d, -0.5)
        self.scale = 1.0 / math.sqrt(head_dim)
        self.qk_bits = (ops.EXACT_BITS - math.ceil(math.log2(head_dim))) // 2 - math.ceil(
            math.log2(QK_LIMIT)
        )
        tokens = self.window * self.window
        self.v_bits = (
            ops.EXACT_BITS
            - PROB_BITS
            - math.ceil(math.log2(tokens))
            - math.ceil(math.log2(ACT_LIMIT))
        )

    def __call__(self, x: Tensor) -> Tensor:
        b, h, w, c = x.shape
        win, s, heads = self.window, self.shift, self.heads
        y = ops.layer_norm(x, *self.norm1, self.eps)
        if s:
            y = torch.roll(y, shifts=(-s, -s), dims=(1, 2))
        windows = window_partition(y, win)
        bw, t, _ = windows.shape
        qkv = self.qkv(windows).reshape(bw, t, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        q = ops.to_grid(qkv[0], self.qk_bits, QK_LIMIT)
        k = ops.to_grid(qkv[1], self.qk_bits, QK_LIMIT)
        logits = (q @ k.transpose(-2, -1)) * (2.0 ** (-2 * self.qk_bits)) * self.scale
        logits = logits + self.position_bias.to(x.device)
        if s:
            mask = shifted_window_mask(h, w, win, s).to(device=x.device, dtype=torch.float64)
            logits = (logits.view(b, -1, heads, t, t) + mask[None, :, None]).view(bw, heads, t, t)
        probs = ops.to_grid(ops.softmax(logits), PROB_BITS, 1.0)
        values = ops.to_grid(qkv[2], self.v_bits, ACT_LIMIT)
        out = (probs @ values) * 2.0 ** -(PROB_BITS + self.v_bits)
        out = self.proj(out.transpose(1, 2).reshape(bw, t, c))
        out = window_reverse(out, win, h, w)
        if s:
            out = torch.roll(out, shifts=(s, s), dims=(1, 2))
        x = x + out
        return x + self.fc2(ops.gelu(self.fc1(ops.layer_norm(x, *self.norm2, self.eps))))


class _Stage:
    def __init__(self, stage: RSTB) -> None:
        self.blocks = [_Block(b) for b in stage.residual_group.blocks]  # type: ignore[arg-type]

    def __call__(self, x: Tensor) -> Tensor:
        tokens = x.permute(0, 2, 3, 1)
        out = tokens
        for block in self.blocks:
            out = block(out)
        return (out + tokens).permute(0, 3, 1, 2)


class FixedPointHyperSynthesis:
    """``h_s`` of a hyperprior codec evaluated so that every machine gets the same bits."""

    def __init__(self, stages: list[_Stage | _Deconv]) -> None:
        self._stages = stages
        self._device = torch.device("cpu")

    @classmethod
    def from_model(cls, model: nn.Module) -> FixedPointHyperSynthesis:
        with torch.no_grad():
            stages: list[_Stage | _Deconv] = [
                _Stage(model.h_s0),  # type: ignore[arg-type]
                _Deconv(model.h_s1),  # type: ignore[arg-type]
                _Stage(model.h_s2),  # type: ignore[arg-type]
                _Deconv(model.h_s3),  # type: ignore[arg-type]
            ]
        return cls(stages)

    def _to(self, device: torch.device) -> None:
        if device != self._device:
            _move(self._stages, device)
            self._device = device

    @torch.no_grad()
    def __call__(self, z_hat: Tensor) -> tuple[Tensor, Tensor]:
        """Return (scales, means) in float64; equal bit for bit on every machine."""
        self._to(z_hat.device)
        x = z_hat.to(torch.float64)
        for stage in self._stages:
            x = stage(x)
        scales, means = x.chunk(2, 1)
        return scales, means


def _move(obj: object, device: torch.device) -> None:
    """Move every tensor held (directly or in nested helpers) by ``obj`` to ``device``."""
    items = obj if isinstance(obj, list) else [obj]
    for item in items:
        for name, value in list(vars(item).items()):
            setattr(item, name, _moved(value, device))


def _moved(value: object, device: torch.device) -> object:
    if isinstance(value, Tensor):
        return value.to(device)
    if isinstance(value, tuple | list):
        return type(value)(_moved(v, device) for v in value)
    if isinstance(value, dict):
        return {key: _moved(v, device) for key, v in value.items()}
    if isinstance(value, _Linear | _Deconv | _Block | _Stage):
        _move(value, device)
    return value
