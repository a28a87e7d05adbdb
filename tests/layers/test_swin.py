"""The fused inference path of the Swin stages against the reference path."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from transtic.layers.swin import Mlp, SwinStage, set_fused_inference

SIZE = (32, 48)
DIM = 16


def _stage(kind: str) -> SwinStage:
    torch.manual_seed(0)
    task_prompts = 4 if kind == "task" else 0
    downsample = 2 if kind == "instance" else 0
    stage = SwinStage(DIM, 4, 2, 8, (16, 16), 2.0, task_prompts, downsample).eval()
    for module in stage.modules():
        if hasattr(module, "impl"):
            module.impl = "sdpa"
    return stage


@pytest.mark.parametrize("kind", ["plain", "task", "instance"])
def test_window_order_stream_equals_the_reference_bit_for_bit(kind):
    reference = _stage(kind)
    fused = copy.deepcopy(reference)
    set_fused_inference(fused, True)
    h, w = SIZE
    x = torch.randn(2, h * w, DIM)
    prompts = None
    if kind == "instance":
        prompts = [torch.randn(2, h * w // 4, DIM) for _ in range(4)]
    before = x.clone()
    with torch.no_grad():
        expected = reference(x, SIZE, prompts)
        actual = fused(x, SIZE, prompts)
    assert torch.equal(actual, expected)
    assert torch.equal(x, before), "the fused path must not write into its input"


def test_fused_path_is_off_while_autograd_records():
    reference = _stage("task")
    fused = copy.deepcopy(reference)
    set_fused_inference(fused, True)
    x = torch.randn(1, SIZE[0] * SIZE[1], DIM, requires_grad=True)
    fused(x, SIZE).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_mlp_gelu_fused_into_fc1_is_exact_in_float32():
    torch.manual_seed(1)
    mlp = Mlp(DIM, 2 * DIM).eval()
    fused = copy.deepcopy(mlp)
    fused.fuse_gelu = True
    x = torch.randn(3, 50, DIM)
    with torch.no_grad():
        assert torch.equal(fused(x), mlp(x))
        # a non-contiguous slice, as the attention's image rows are
        assert torch.equal(fused(x[:, 5:]), mlp(x[:, 5:]))


def test_quantised_mlp_keeps_its_own_kernels():
    from transtic.models.quantization import quantize_linear_layers

    torch.manual_seed(2)
    mlp = Mlp(DIM, 2 * DIM).eval()
    quantised = quantize_linear_layers(copy.deepcopy(mlp))
    assert isinstance(quantised, Mlp) and type(quantised.fc1) is not nn.Linear
    x = torch.randn(2, 10, DIM)
    with torch.no_grad():
        plain = quantised(x)
        quantised.fuse_gelu = True
        assert torch.equal(quantised(x), plain)


@pytest.mark.parametrize("chunk_tokens", [4096, 5 * 64])
@pytest.mark.parametrize("kind", ["plain", "task", "instance"])
def test_native_attention_kernel_matches_the_reference_stage(kind, chunk_tokens, monkeypatch):
    """Also in chunks of 5 windows: chunks then straddle the two images and the masks."""
    from transtic.kernels import available
    from transtic.layers import swin

    monkeypatch.setattr(swin, "NATIVE_CHUNK_TOKENS", chunk_tokens)
    if not available():
        pytest.skip("no C++ compiler to build the native kernel")
    reference = _stage(kind)
    for module in reference.modules():
        if hasattr(module, "impl"):
            module.impl = "eager"
    native = copy.deepcopy(reference)
    set_fused_inference(native, True)
    for module in native.modules():
        if hasattr(module, "impl"):
            module.impl = "native"
    h, w = SIZE
    x = torch.randn(2, h * w, DIM)
    prompts = None
    if kind == "instance":
        prompts = [torch.randn(2, h * w // 4, DIM) for _ in range(4)]
    with torch.no_grad():
        expected = reference(x, SIZE, prompts)
        actual = native(x, SIZE, prompts)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_packed_linear_weights_follow_weight_updates_and_copies():
    from transtic.layers.attention import inference_linear

    torch.manual_seed(2)
    layer = nn.Linear(DIM, 3 * DIM).eval()
    x = torch.randn(7, DIM)
    with torch.no_grad():
        torch.testing.assert_close(inference_linear(layer, x), layer(x))
        layer.weight.mul_(2.0)  # in place: the packed copy must be rebuilt
        torch.testing.assert_close(inference_linear(layer, x), layer(x))
        twin = copy.deepcopy(layer)
        torch.testing.assert_close(inference_linear(twin, x), layer(x))


def test_bf16_linears_avoid_onednn_where_it_has_no_bf16_kernels(monkeypatch):
    """Under AVX2 (or oneDNN capped to it) a bf16 oneDNN linear fails: PyTorch's runs."""
    from transtic.layers import attention

    monkeypatch.setattr(attention, "_onednn_bf16", lambda: False)
    monkeypatch.setattr(
        torch.ops.mkldnn, "_linear_pointwise", None, raising=False
    )  # any use would fail
    torch.manual_seed(3)
    layer = nn.Linear(DIM, DIM).eval().to(torch.bfloat16)
    x = torch.randn(5, DIM, dtype=torch.bfloat16)
    with torch.no_grad():
        torch.testing.assert_close(attention.inference_linear(layer, x, "gelu"), F.gelu(layer(x)))
