"""The fixed-point entropy-parameter path is exact, order independent and close to float."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from transtic.entropy import FixedPointHyperSynthesis
from transtic.entropy import exact_ops as ops


def test_exact_linear_is_independent_of_summation_order():
    torch.manual_seed(0)
    x = torch.randn(64, 384, dtype=torch.float64) * 30
    w = torch.randn(96, 384) * 0.05
    w_int, w_scale = ops.quantize_weight(w)
    bias = torch.randn(96, dtype=torch.float64)
    ref = ops.exact_linear(x, w_int, w_scale, bias, 2.0**12)
    perm = torch.randperm(384)
    permuted = ops.exact_linear(x[:, perm], w_int[:, perm], w_scale, bias, 2.0**12)
    assert torch.equal(ref, permuted)
    # a different blocking (one row at a time) is also bit-identical
    rows = torch.cat(
        [ops.exact_linear(x[i : i + 1], w_int, w_scale, bias, 2.0**12) for i in range(64)]
    )
    assert torch.equal(ref, rows)
    assert torch.allclose(ref, x @ w.double().T + bias, rtol=1e-3, atol=1e-2)


def test_nonlinearities_match_torch():
    x = torch.linspace(-12, 12, 10001, dtype=torch.float64)
    assert torch.allclose(ops.gelu(x), F.gelu(x), atol=2e-7)
    neg = torch.linspace(-700, 0, 10001, dtype=torch.float64)
    assert torch.allclose(ops.exp_nonpositive(neg), torch.exp(neg), rtol=1e-12, atol=0)
    logits = torch.randn(8, 80, dtype=torch.float64) * 5
    assert torch.allclose(ops.softmax(logits), logits.softmax(-1), atol=1e-8)
    feats = torch.randn(5, 192, dtype=torch.float64) * 7 + 3
    weight, bias = torch.rand(192, dtype=torch.float64), torch.randn(192, dtype=torch.float64)
    expected = F.layer_norm(feats, (192,), weight, bias, 1e-5)
    assert torch.allclose(ops.layer_norm(feats, weight, bias, 1e-5), expected, atol=1e-5)


def _z_hat(model, size=(2, 3), batch=1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    n = model.config.N
    return torch.round(torch.randn(batch, n, *size, generator=gen) * 3)


def test_fixed_point_is_close_to_float(tiny_transtic):
    z_hat = _z_hat(tiny_transtic, (4, 4))
    scales, means = FixedPointHyperSynthesis.from_model(tiny_transtic)(z_hat)
    ref_scales, ref_means = tiny_transtic.h_s(z_hat).chunk(2, 1)
    assert torch.allclose(scales.float(), ref_scales, atol=2e-4, rtol=1e-3)
    assert torch.allclose(means.float(), ref_means, atol=2e-4, rtol=1e-3)


def test_fixed_point_ignores_threads_and_batching(tiny_transtic):
    fixed = FixedPointHyperSynthesis.from_model(tiny_transtic)
    z_hat = _z_hat(tiny_transtic, (4, 8), batch=3)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = fixed(z_hat)
        torch.set_num_threads(max(2, threads))
        many = fixed(z_hat)
    finally:
        torch.set_num_threads(threads)
    single = fixed(z_hat[1:2])
    for a, b in zip(one, many, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(one[0][1:2], single[0]) and torch.equal(one[1][1:2], single[1])


def test_fixed_point_survives_hostile_latents(tiny_transtic):
    fixed = FixedPointHyperSynthesis.from_model(tiny_transtic)
    z_hat = torch.full((1, tiny_transtic.config.N, 4, 4), 1e9)
    z_hat[0, 0] = -1e9
    scales, means = fixed(z_hat)
    assert torch.isfinite(scales).all() and torch.isfinite(means).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fixed_point_cpu_and_gpu_agree_bitwise(tiny_transtic):
    fixed = FixedPointHyperSynthesis.from_model(tiny_transtic)
    z_hat = _z_hat(tiny_transtic, (4, 8), batch=2)
    cpu = fixed(z_hat)
    gpu = fixed(z_hat.cuda())
    for a, b in zip(cpu, gpu, strict=True):
        assert torch.equal(a, b.cpu())
