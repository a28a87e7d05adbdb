"""The int8 fast copy: which layers are quantised, how close it stays, determinism."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.ao.nn import quantized as nnq
from torch.ao.nn.intrinsic import quantized as nniq

from transtic import precision
from transtic.codec import ImageCodec
from transtic.layers import InstancePromptGenerator
from transtic.models import quantization
from transtic.models.quantization import calibration_images, qconfig_mapping


def _relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return float((value - reference).norm() / reference.norm())


def test_calibration_images_are_fixed_8bit_photos():
    first, again = calibration_images(64, 3), calibration_images(64, 3)
    assert first.shape == (3, 3, 64, 64)
    assert torch.equal(first, again)
    assert float(first.min()) >= 0 and float(first.max()) <= 1
    assert torch.equal(first * 255, (first * 255).round())
    assert not torch.equal(first[0], first[1])
    assert float(first.std()) > 0.1  # not a flat field


def test_activations_use_8_bits_only_with_int8_dot_products(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "avx512_vnni"}))
    assert not qconfig_mapping().global_qconfig.activation().reduce_range
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2"}))
    assert qconfig_mapping().global_qconfig.activation().reduce_range


@pytest.fixture
def without_native_bf16(monkeypatch):
    """int8 as on CPUs without native bf16: dynamic int8 Linear layers, float32 rest."""
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)


@pytest.fixture
def with_int8_dot_products(monkeypatch):
    """int8 as on CPUs with VNNI (or the like), whatever this one has: an int8 generator."""
    monkeypatch.setattr(precision, "native_int8", lambda device: True)


def test_int8_copy_quantises_the_prompt_generator_and_analysis_convs(
    tiny_transtic, without_native_bf16, with_int8_dot_products
):
    fast = ImageCodec(tiny_transtic, precision="int8")._transforms
    generator = [m for m in fast.g_a0_prompt.modules() if isinstance(m, nniq.ConvReLU2d)]
    # every conv + BN + ReLU of the U-Net fused into one int8 kernel
    assert len(generator) == sum(
        isinstance(m, nn.ReLU) for m in tiny_transtic.g_a0_prompt.modules()
    )
    # one quantise at the input and one dequantise at the output: pooling, upsampling
    # and the skip concatenations stay in int8
    code = fast.g_a0_prompt.code
    assert code.count("quantize_per_tensor(") == 1 and code.count(".dequantize()") == 1
    convs = [fast.g_a2_prompt, *fast.g_a0_prompt_layers, *fast.g_a2_prompt_layers]
    assert all(isinstance(c.module, nnq.Conv2d) for c in convs)
    # the image path's convs, the upsampling convs and the hyper transforms stay float32
    image_path = (fast.g_a0, fast.g_a2, fast.g_a4, fast.g_a6, fast.h_a0)
    assert all(type(c) is nn.Conv2d for c in image_path)
    assert not any("quantized" in type(m).__module__ for m in (fast.g_s5, *fast.g_s7.modules()))
    assert not any("quantized" in type(m).__module__ for m in fast.h_s0.modules())
    assert torch.equal(fast.h_s3.weight, tiny_transtic.h_s3.weight)


def test_the_loaded_model_is_left_as_it_was(tiny_transtic):
    before = {k: v.clone() for k, v in tiny_transtic.state_dict().items()}
    ImageCodec(tiny_transtic, precision="int8")
    after = tiny_transtic.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert isinstance(tiny_transtic.g_a0_prompt, InstancePromptGenerator)
    assert isinstance(tiny_transtic.g_a0_prompt.down1[1], nn.BatchNorm2d)


def test_int8_analysis_stays_close_to_float32(tiny_transtic):
    exact = ImageCodec(tiny_transtic, precision="float32")._transforms
    quick = ImageCodec(tiny_transtic, precision="int8")._transforms
    image = calibration_images(256, 1, seed=7).contiguous(memory_format=torch.channels_last)
    y_ref, z_ref = exact.analyze(image)
    y, z = quick.analyze(image)
    assert _relative_error(y, y_ref) < 0.1
    assert _relative_error(z, z_ref) < 0.2
    with torch.no_grad():
        prompt_ref = exact.g_a0_prompt(image)
        assert _relative_error(quick.g_a0_prompt(image), prompt_ref) < 0.05
    y_hat = torch.round(y_ref)
    assert (quick.synthesize(y_hat) - exact.synthesize(y_hat)).abs().mean() < 0.02


def test_int8_streams_are_deterministic(tiny_transtic):
    image = torch.rand(3, 96, 160, generator=torch.Generator().manual_seed(3))
    first = ImageCodec(tiny_transtic, precision="int8")
    second = ImageCodec(tiny_transtic, precision="int8")
    stream = first.encode(image).data
    assert first.encode(image).data == stream
    assert second.encode(image).data == stream
    assert torch.equal(first.decode(stream).image, second.decode(stream).image)


def test_int8_without_prompt_generator(tiny_tic, without_native_bf16):
    quick = ImageCodec(tiny_tic, precision="int8")
    assert type(quick._transforms.g_a0) is nn.Conv2d
    assert any("quantized" in type(m).__module__ for m in quick._transforms.g_a1.modules())
    exact = ImageCodec(tiny_tic, precision="float32")
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(4))
    decoded = exact.decode(quick.encode(image).data, keep_latent=True)
    assert decoded.y_hat is not None and decoded.image.shape == (3, 64, 64)


def test_calibration_side_follows_the_model_alignment(tiny_transtic, monkeypatch):
    seen: list[tuple[int, ...]] = []
    real = quantization.calibration_images

    def spy(side: int, *args: object, **kwargs: object) -> torch.Tensor:
        images = real(side, *args, **kwargs)  # type: ignore[arg-type]
        seen.append(tuple(images.shape))
        return images

    monkeypatch.setattr(quantization, "calibration_images", spy)
    ImageCodec(tiny_transtic, precision="int8")
    alignment = tiny_transtic.config.alignment
    assert seen and all(s[-1] % alignment == 0 and s[-2] % alignment == 0 for s in seen)


def test_int8_runs_the_rest_in_bf16_where_bf16_is_native(
    tiny_transtic, monkeypatch, with_int8_dot_products
):
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    fast = ImageCodec(tiny_transtic, precision="int8")._transforms
    island = quantization.Float32Island
    # the int8 prompt branch, behind float32 boundaries
    assert isinstance(fast.g_a0_prompt, island) and isinstance(fast.g_a2_prompt, island)
    assert all(isinstance(layer, island) for layer in fast.g_a0_prompt_layers)
    assert "quantize_per_tensor(" in fast.g_a0_prompt.inner.code
    # everything else bf16, no dynamic quantisation
    block = fast.g_a1.residual_group.blocks[0]
    assert type(block.attn.qkv) is nn.Linear and block.attn.qkv.weight.dtype == torch.bfloat16
    assert fast.g_a0.weight.dtype == torch.bfloat16
    assert next(fast.g_s0.parameters()).dtype == torch.bfloat16
    # the entropy parameters' path is untouched
    assert next(fast.h_s0.parameters()).dtype == torch.float32
    exact = ImageCodec(tiny_transtic, precision="float32")
    image = torch.rand(3, 256, 256, generator=torch.Generator().manual_seed(6))
    stream = ImageCodec(tiny_transtic, precision="int8").encode(image).data
    decoded = exact.decode(stream)
    assert decoded.image.shape == (3, 256, 256)
    reference = exact.decode(exact.encode(image).data).image
    bf16 = ImageCodec(tiny_transtic, precision="bfloat16")
    bf16_error = _relative_error(exact.decode(bf16.encode(image).data).image, reference)
    # random tiny weights amplify rounding: the mix stays in bf16's league
    assert _relative_error(decoded.image, reference) < 2 * bf16_error + 0.02


@pytest.mark.parametrize("bf16", [False, True])
def test_without_int8_dot_products_the_generator_stays_float32_with_winograd(
    tiny_transtic, monkeypatch, bf16
):
    """7-bit activations and saturating sums (AVX2) make the int8 generator slower than
    the float32 Winograd one: the generator stays float32 (exact), the rest as before."""
    from transtic.kernels import winograd
    from transtic.layers.prompt_generator import WinogradConv3x3

    if not winograd.available():
        pytest.skip("no C++ compiler to build the Winograd kernel")
    monkeypatch.setattr(precision, "native_int8", lambda device: False)
    monkeypatch.setattr(precision, "native_bf16", lambda device: bf16)
    fast = ImageCodec(tiny_transtic, precision="int8")._transforms
    generator = fast.g_a0_prompt.inner if bf16 else fast.g_a0_prompt
    assert isinstance(fast.g_a0_prompt, quantization.Float32Island) == bf16
    assert isinstance(generator, InstancePromptGenerator)
    assert any(isinstance(m, WinogradConv3x3) for m in generator.modules())
    assert not any("quantized" in type(m).__module__ for m in generator.modules())
    # the strided prompt convs are still int8
    convs = [fast.g_a2_prompt, *fast.g_a0_prompt_layers]
    assert all(isinstance(getattr(c, "inner", c).module, nnq.Conv2d) for c in convs)
    image = torch.rand(1, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        prompts = fast.g_a0_prompt(image.bfloat16() if bf16 else image)
        expected = tiny_transtic.g_a0_prompt(image)
    torch.testing.assert_close(prompts.float(), expected, rtol=1e-2, atol=1e-2)
