"""CPU <-> GPU: streams coded on one decode to identical latents on the other (needs CUDA)."""

from __future__ import annotations

import copy

import pytest
import torch

from transtic.codec import ImageCodec

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_streams_cross_between_cpu_and_gpu(tiny_transtic, precision):
    cpu = ImageCodec(copy.deepcopy(tiny_transtic), precision="float32", device="cpu")
    gpu = ImageCodec(copy.deepcopy(tiny_transtic), precision=precision, device="cuda")
    image = torch.rand(3, 200, 300)
    for encoder in (cpu, gpu):
        stream = encoder.encode(image).data
        on_cpu = cpu.decode(stream, keep_latent=True)
        on_gpu = gpu.decode(stream, keep_latent=True)
        assert on_cpu.y_hat is not None and on_gpu.y_hat is not None
        assert torch.equal(on_cpu.y_hat.cpu(), on_gpu.y_hat.cpu())
        assert (on_cpu.image - on_gpu.image).abs().mean() < 0.05
