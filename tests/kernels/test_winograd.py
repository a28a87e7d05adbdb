"""The native Winograd F(2x2, 3x3) convolution against float64 convolutions."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from transtic.kernels import build
from transtic.kernels.winograd import available, channel_multiple, conv3x3, transform_weights

pytestmark = pytest.mark.skipif(not available(), reason="no C++ compiler to build the kernel")


def _case(n, cin, cout, h, w, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cin, h, w, generator=gen).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(cout, cin, 3, 3, generator=gen) / (3 * cin**0.5)
    bias = torch.randn(cout, generator=gen)
    return x, weight, bias


@pytest.mark.parametrize(
    ("n", "cin", "cout", "h", "w"),
    [
        (1, 16, 16, 8, 8),
        (2, 32, 64, 7, 9),
        (1, 64, 32, 1, 1),
        (1, 48, 128, 2, 5),
        (3, 16, 48, 13, 4),
    ],
)
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("tile", [2, 4])
def test_matches_a_float64_convolution(n, cin, cout, h, w, relu, tile):
    multiple = channel_multiple()
    if cin % multiple or cout % multiple:
        pytest.skip(f"channels not multiples of this build's {multiple} lanes")
    x, weight, bias = _case(n, cin, cout, h, w)
    got = conv3x3(x, transform_weights(weight, tile), bias, relu=relu)
    expected = F.conv2d(x.double(), weight.double(), bias.double(), padding=1)
    expected = expected.relu() if relu else expected
    assert got.is_contiguous(memory_format=torch.channels_last)
    tolerance = {2: 1e-5, 4: 5e-5}[tile]
    torch.testing.assert_close(got.double(), expected, rtol=tolerance, atol=tolerance)
    # F(2x2) rounds no worse than PyTorch's own float32 convolution, F(4x4) (entries up
    # to 8 and 1/24 in its transforms) within ten times that
    theirs = F.conv2d(x, weight, bias, padding=1)
    theirs = theirs.relu() if relu else theirs
    # (up to one float32 ulp of the whole: tiny outputs make the ratio noisy)
    slack = 1.2e-7 * expected.norm()
    bound = {2: 2, 4: 20}[tile] * (theirs.double() - expected).norm() + slack
    assert (got.double() - expected).norm() <= bound


@pytest.mark.parametrize("tile", [2, 4])
def test_two_inputs_convolve_as_their_concatenation(tile):
    x, weight, bias = _case(2, 48, 32, 9, 14, seed=4)
    first, second = x[:, :16].contiguous(memory_format=torch.channels_last), x[:, 16:]
    second = second.contiguous(memory_format=torch.channels_last)
    u = transform_weights(weight, tile)
    whole = conv3x3(x, u, bias, relu=True)
    assert torch.equal(conv3x3(first, u, bias, relu=True, concatenated=second), whole)
    with pytest.raises(ValueError, match="height and width"):
        short = second[:, :, :8].contiguous(memory_format=torch.channels_last)
        conv3x3(first, u, bias, relu=True, concatenated=short)


def test_without_bias():
    x, weight, _ = _case(1, 32, 32, 6, 10, seed=1)
    got = conv3x3(x, transform_weights(weight), None, relu=False)
    torch.testing.assert_close(got, F.conv2d(x, weight, padding=1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tile", [2, 4])
def test_result_does_not_depend_on_the_thread_count(tile):
    x, weight, bias = _case(2, 32, 64, 37, 21, seed=2)
    u = transform_weights(weight, tile)
    threads = torch.get_num_threads()
    outs = []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            outs.append(conv3x3(x, u, bias, relu=True))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_bad_inputs_are_refused():
    x, weight, bias = _case(1, 32, 32, 4, 4)
    u = transform_weights(weight)
    with pytest.raises(ValueError, match="float32"):
        conv3x3(x.double(), u, bias, relu=False)
    with pytest.raises(ValueError, match="channels-last"):
        conv3x3(x.contiguous(), u, bias, relu=False)
    with pytest.raises(ValueError, match="transformed weights"):
        conv3x3(x, u[:, :16], bias, relu=False)
    with pytest.raises(ValueError, match="bias"):
        conv3x3(x, u, bias[:8], relu=False)
    odd = torch.randn(1, 33, 4, 4).contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="multiples"):
        conv3x3(odd, transform_weights(torch.randn(32, 33, 3, 3)), None, relu=False)
    with pytest.raises(ValueError, match="3, 3"):
        transform_weights(torch.randn(8, 8, 5, 5))
    with pytest.raises(ValueError, match="not 3"):
        transform_weights(weight, 3)
    with pytest.raises(ValueError, match="16 or 36"):
        conv3x3(x, u[:9], bias, relu=False)
    empty = torch.empty(0, 32, 4, 4).contiguous(memory_format=torch.channels_last)
    assert conv3x3(empty, u, bias, relu=False).shape == (0, 32, 4, 4)


def test_a_kernel_without_openmp_runs_its_rows_on_threads_of_its_own(fresh_build, monkeypatch):
    x, weight, bias = _case(2, 32, 32, 19, 11, seed=3)
    u = transform_weights(weight, 4)
    with_openmp = conv3x3(x, u, bias, relu=True)
    monkeypatch.setattr(build, "openmp_flags", lambda: ())
    build.forget_loaded()
    from transtic.kernels.winograd import _library

    loaded = _library()
    assert loaded is not None and not loaded[2]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        assert torch.equal(conv3x3(x, u, bias, relu=True), with_openmp)
    finally:
        torch.set_num_threads(threads)


def _folded_generator():
    from transtic.layers import InstancePromptGenerator

    torch.manual_seed(0)
    generator = InstancePromptGenerator(out_channels=64).eval()
    for module in generator.modules():  # BNs with statistics of their own
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    generator.fold_batch_norms()
    return generator.to(memory_format=torch.channels_last)


def test_the_prompt_generator_runs_its_3x3_convs_by_winograd():
    from transtic.layers.prompt_generator import WinogradConv3x3

    folded = _folded_generator()
    fast = copy.deepcopy(folded)
    # every conv but the first (3 input channels) and the strided head
    assert fast.use_winograd_convs() == 11
    assert sum(isinstance(m, WinogradConv3x3) for m in fast.modules()) == 11
    image = torch.rand(1, 3, 40, 56).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = folded(image)
        got = fast(image)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    # with autograd (training), or in another dtype, the layers run PyTorch's conv
    torch.testing.assert_close(fast(image).detach(), expected, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        half = copy.deepcopy(fast).to(torch.bfloat16)(image.bfloat16())
    assert half.dtype == torch.bfloat16 and torch.allclose(
        half.float(), expected, atol=0.1, rtol=0.05
    )


def test_which_fast_copies_use_winograd(monkeypatch):
    """float32 copies on the CPU; bf16 copies where bf16 runs on AVX-512 BF16 dot products
    (the float32 Winograd generator is faster there), not beside AMX tiles; int8 copies
    only without int8 dot products."""
    from transtic import precision
    from transtic.layers.prompt_generator import WinogradConv3x3
    from transtic.models import create_model
    from transtic.models.quantization import Float32Island

    torch.manual_seed(0)
    model = create_model("transtic-tiny").eval()

    def winograd_layers(name, flags=frozenset()):
        monkeypatch.setattr(precision, "usable_cpu_flags", lambda: frozenset(flags))
        fast = model.fast_transforms(name)
        return fast, sum(isinstance(m, WinogradConv3x3) for m in fast.modules())

    assert winograd_layers("float32")[1] > 0
    assert winograd_layers("int8", {"avx512_vnni"})[1] == 0  # an int8 generator
    assert winograd_layers("int8")[1] > 0  # without int8 dot products: float32, Winograd
    assert winograd_layers("bfloat16", {"avx512_bf16", "amx_bf16"})[1] == 0
    assert winograd_layers("bfloat16")[1] == 0
    fast, layers = winograd_layers("bfloat16", {"avx512_bf16"})
    assert layers > 0 and isinstance(fast.g_a0_prompt, Float32Island)
    image = torch.rand(1, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        prompts = fast.g_a0_prompt(image.bfloat16())
        expected = model.g_a0_prompt(image)
    assert prompts.dtype == torch.bfloat16
    torch.testing.assert_close(prompts.float(), expected, rtol=1e-2, atol=1e-2)
