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


@pytest.mark.parametrize(
    ("cin", "cout", "kernel", "stride", "padding", "out_pad", "size"),
    [(8, 12, 3, 2, 1, 1, (5, 7)), (6, 4, 5, 2, 2, 1, (4, 6)), (5, 3, 5, 3, 2, 2, (3, 4))],
)
def test_transposed_conv_by_phases_is_the_zero_inserted_product_bit_for_bit(
    cin, cout, kernel, stride, padding, out_pad, size
):
    """Skipping the products with inserted zeros must not change a single bit."""
    from transtic.entropy.fixed_point import _Deconv, _Linear

    torch.manual_seed(1)
    layer = torch.nn.ConvTranspose2d(cin, cout, kernel, stride, padding, out_pad)
    deconv = _Deconv(layer)
    h, w = size
    x = torch.round(torch.randn(2, cin, h, w, dtype=torch.float64) * 40) / 8
    up = x.new_zeros(2, cin, (h - 1) * stride + 1, (w - 1) * stride + 1)
    up[:, :, ::stride, ::stride] = x
    lo = kernel - 1 - padding
    cols = F.unfold(F.pad(up, (lo, lo + out_pad, lo, lo + out_pad)), kernel).transpose(1, 2)
    full = _Linear.of(layer.weight.detach().flip(2, 3).transpose(0, 1), layer.bias)
    zero_inserted = full(cols).transpose(1, 2).reshape(2, cout, h * stride, w * stride)
    got = deconv(x)
    assert torch.equal(got, zero_inserted)
    with torch.no_grad():
        assert torch.allclose(got, layer.double()(x), atol=1e-3)


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


def test_moving_to_a_device_takes_every_tensor_along(tiny_transtic):
    """What the GPU test needs of the mover, checked without a GPU: after a move to the
    meta device no tensor (weights, per-phase weights, norms) is left on the CPU."""
    fixed = FixedPointHyperSynthesis.from_model(tiny_transtic)
    fixed._to(torch.device("meta"))

    def tensors(value, seen):  # type: ignore[no-untyped-def]
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, list | tuple):
            for v in value:
                yield from tensors(v, seen)
        elif isinstance(value, dict):
            for v in value.values():
                yield from tensors(v, seen)
        elif hasattr(value, "__dict__") and id(value) not in seen:
            seen.add(id(value))
            for v in vars(value).values():
                yield from tensors(v, seen)

    found = list(tensors(fixed._stages, set()))
    assert found and all(t.device.type == "meta" for t in found)
    shapes = fixed._stages[1].phase_weights
    assert len(shapes) == 4 and all(w.device.type == "meta" for w in shapes.values())
