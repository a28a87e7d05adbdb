"""Arithmetic that gives bit-identical results on any IEEE-754 machine.

Floating-point results differ between machines for two reasons: reductions (sums,
matrix products) are evaluated in different orders, and transcendental functions
(exp, erf) come from different libraries. Everything else PyTorch does elementwise
(+, -, *, true division by a tensor, sqrt) is correctly rounded everywhere.

So every reduction here sums *integers* held in float64 (or int64) whose partial
sums stay below 2**53: such sums are exact in any order, on any BLAS. Operands are
put on a power-of-two grid first and the bounds are enforced by clamping, so even
a hostile bitstream cannot break exactness. Transcendentals are polynomials and
rational functions built from correctly rounded operations only.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

EXACT_BITS = 53  # float64 represents every integer below 2**53 exactly
WEIGHT_BITS = 15  # per-output-channel weight precision
_LN2 = 0.6931471805599453
_LOG2E = 1.4426950408889634
# Taylor coefficients 1/k! for exp on [-ln2/2, ln2/2]; 13 terms reach float64 precision.
_EXP_COEFFS = [1.0 / math.factorial(k) for k in range(13, -1, -1)]
# Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): ample for entropy parameters.
_ERF_P = 0.3275911
_ERF_A = [1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592]


def to_grid(x: Tensor, frac_bits: int, limit: float) -> Tensor:
    """Integers ``round(clamp(x) * 2**frac_bits)`` as float64 (round half to even)."""
    return torch.round(x.clamp(-limit, limit) * float(2**frac_bits))


def activation_bits(k: int, limit: float, weight_bits: int = WEIGHT_BITS) -> int:
    """Largest grid precision keeping a K-term integer dot product below 2**53."""
    return EXACT_BITS - weight_bits - math.ceil(math.log2(k)) - math.ceil(math.log2(limit))


def quantize_weight(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Per-output-row power-of-two scaling: (integer weights, 2**-exponent per row).

    ``frexp`` is exact, so the chosen exponents do not depend on any libm.
    """
    w = weight.detach().to(torch.float64).reshape(weight.shape[0], -1)
    peak = w.abs().amax(dim=1).clamp_min(2.0**-60)
    _, exponent = torch.frexp(peak)
    shift = (WEIGHT_BITS - exponent).to(torch.float64)
    w_int = torch.round(w * torch.pow(2.0, shift)[:, None])
    return w_int, torch.pow(2.0, -shift)


def exact_linear(
    x: Tensor,
    w_int: Tensor,
    w_scale: Tensor,
    bias: Tensor | None,
    limit: float,
    bits: int | None = None,
) -> Tensor:
    """x @ W^T + b with an exact integer product. x: (..., K); w_int: (O, K).

    ``bits``: the activation grid, by default the finest that keeps K terms exact; a
    product over a subset of a layer's columns passes the full layer's, so its partial
    sums are the very integers the full product would add up.
    """
    if bits is None:
        bits = activation_bits(w_int.shape[1], limit)
    acc = to_grid(x, bits, limit) @ w_int.T  # exact: integers below 2**53
    out = acc * (w_scale * 2.0**-bits)  # power-of-two rescale: exact
    return out + bias if bias is not None else out


def exp_nonpositive(x: Tensor) -> Tensor:
    """exp(x) for x <= 0 (clamped at -700) by range reduction and a fixed polynomial."""
    x = x.clamp(-700.0, 0.0)
    k = torch.floor(x * _LOG2E + 0.5)
    r = (x - k * _LN2).to(torch.float64)
    poly = torch.full_like(r, _EXP_COEFFS[0])
    for c in _EXP_COEFFS[1:]:
        poly = poly * r + c
    return poly * _pow2(k)


def _pow2(k: Tensor) -> Tensor:
    """2**k for integer-valued k in [-1100, 0], built from exact table entries."""
    table = torch.tensor([2.0**-i for i in range(0, 1101)], dtype=torch.float64, device=k.device)
    return table[(-k).clamp(0, 1100).long()]


def gelu(x: Tensor) -> Tensor:
    """x * Phi(x) with a deterministic erf."""
    u = x * 0.7071067811865476
    a = u.abs()
    t = torch.ones_like(a) / (a * _ERF_P + 1.0)
    poly = torch.full_like(t, _ERF_A[0])
    for c in _ERF_A[1:]:
        poly = poly * t + c
    erf_abs = 1.0 - poly * t * exp_nonpositive(-(a * a))
    erf = torch.where(u < 0, -erf_abs, erf_abs)
    return x * 0.5 * (erf + 1.0)


def layer_norm(
    x: Tensor, weight: Tensor, bias: Tensor, eps: float, limit: float = 2.0**12
) -> Tensor:
    """LayerNorm over the last dim with exact int64 sums."""
    channels = x.shape[-1]
    # int64 sums of squares: C * (limit * 2**f)**2 must stay below 2**62.
    frac = (62 - math.ceil(math.log2(channels))) // 2 - math.ceil(math.log2(limit))
    q = to_grid(x, frac, limit)
    qi = q.to(torch.int64)
    s1 = qi.sum(-1, keepdim=True).to(torch.float64)
    s2 = (qi * qi).sum(-1, keepdim=True).to(torch.float64)
    count = torch.full_like(s1, float(channels))
    scale = 2.0**-frac
    mean = s1 / count * scale
    var = (s2 / count * (scale * scale) - mean * mean).clamp_min(0.0)
    rstd = torch.ones_like(var) / torch.sqrt(var + eps)
    return (q * scale - mean) * rstd * weight + bias


def softmax(logits: Tensor) -> Tensor:
    """Softmax over the last dim; the normalising sum is over integers."""
    shifted = logits - logits.amax(dim=-1, keepdim=True)
    e = torch.round(exp_nonpositive(shifted.clamp_min(-60.0)) * 2.0**30)
    return e / e.sum(dim=-1, keepdim=True)
