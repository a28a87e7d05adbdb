"""Choosing the transforms' number format by what the hardware does natively."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch

from transtic import precision
from transtic.codec import ImageCodec

AVX2_ONLY = frozenset({"sse4_2", "avx", "avx2", "fma", "f16c"})
AVX512_BF16 = AVX2_ONLY | {"avx512f", "avx512_bf16", "avx512_vnni"}
SAPPHIRE_RAPIDS = AVX2_ONLY | {"avx512f", "amx_bf16", "amx_int8", "avx512_vnni"}
ARM_BF16 = frozenset({"fp", "asimd", "asimddp", "bf16"})
ALDER_LAKE = AVX2_ONLY | {"avx_vnni"}


UNCAPPED = precision.KernelSupport(aten_capability="AVX512", onednn_bf16=True)
CAPPED_TO_AVX2 = precision.KernelSupport(aten_capability="AVX2", onednn_bf16=False)


@pytest.fixture
def flags(monkeypatch):
    """Pretend to run on a CPU with the given /proc/cpuinfo flags, and kernel libraries
    that use all of it unless ``kernels`` says what they report instead."""

    def use(cpu: frozenset[str], kernels: precision.KernelSupport = UNCAPPED) -> None:
        monkeypatch.setattr(precision, "cpu_flags", lambda: cpu)
        monkeypatch.setattr(precision, "kernel_support", lambda: kernels)

    monkeypatch.setattr(precision, "_warned", set())
    return use


@pytest.mark.parametrize(
    ("cpu", "expected"),
    [
        (AVX2_ONLY, "float32"),
        (ALDER_LAKE, "float32"),
        (frozenset(), "float32"),
        (AVX512_BF16, "bfloat16"),
        (SAPPHIRE_RAPIDS, "bfloat16"),
        (ARM_BF16, "bfloat16"),
    ],
)
def test_auto_picks_bf16_only_with_native_support(flags, cpu, expected):
    flags(cpu)
    assert precision.resolve_precision("auto", "cpu").precision == expected


@pytest.mark.parametrize("chip", [AVX512_BF16, SAPPHIRE_RAPIDS])
@pytest.mark.parametrize(
    "kernels",
    [
        CAPPED_TO_AVX2,  # ATEN_CPU_CAPABILITY=avx2 + ONEDNN_MAX_CPU_ISA=AVX2
        precision.KernelSupport(aten_capability="AVX2", onednn_bf16=True),  # ATen capped only
        precision.KernelSupport(aten_capability="AVX512", onednn_bf16=False),  # oneDNN only
        precision.KernelSupport(aten_capability="DEFAULT", onednn_bf16=False),  # no vectors
    ],
)
def test_auto_picks_float32_when_the_libraries_are_capped_below_bf16(flags, chip, kernels):
    """An AVX-512 chip whose kernel libraries are capped (emulating an AVX2 box) emulates
    bf16, so auto must not pick it, and must say why."""
    flags(chip, kernels)
    choice = precision.resolve_precision("auto", "cpu")
    assert choice.precision == "float32"
    assert "capped" in choice.reason and "emulated" in choice.reason
    assert not precision.native_bf16(torch.device("cpu"))


def test_capped_aten_also_loses_avx512_vnni_for_int8(flags):
    flags(AVX512_BF16, CAPPED_TO_AVX2)
    assert precision.resolve_precision("auto", "cpu", allow_int8=True).precision == "float32"
    assert "avx512_vnni" not in precision.usable_cpu_flags()
    assert "avx2" in precision.usable_cpu_flags()
    # AVX-VNNI is an AVX2-class extension: an ATen cap at AVX2 leaves it usable
    flags(ALDER_LAKE, CAPPED_TO_AVX2)
    assert precision.resolve_precision("auto", "cpu", allow_int8=True).precision == "int8"


def test_arm_bf16_does_not_need_an_x86_capability(flags):
    flags(ARM_BF16, precision.KernelSupport(aten_capability="SVE256", onednn_bf16=True))
    assert precision.resolve_precision("auto", "cpu").precision == "bfloat16"
    flags(ARM_BF16, precision.KernelSupport(aten_capability="DEFAULT", onednn_bf16=False))
    assert precision.resolve_precision("auto", "cpu").precision == "float32"


def test_explicit_bf16_under_a_cap_warns(flags):
    flags(AVX512_BF16, CAPPED_TO_AVX2)
    with pytest.warns(RuntimeWarning, match="emulated"):
        assert precision.resolve_precision("bfloat16", "cpu").precision == "bfloat16"


def test_uncapped_libraries_leave_auto_as_the_flags_say(flags):
    flags(AVX512_BF16, UNCAPPED)
    assert precision.capped_isa_note() == ""
    assert precision.usable_cpu_flags() == AVX512_BF16


def test_kernel_support_reads_back_this_process():
    """The real read-back agrees with what torch reports (no environment is read)."""
    kernels = precision.kernel_support()
    assert kernels.aten_capability == torch.backends.cpu.get_cpu_capability()
    assert kernels.onednn_bf16 == torch.ops.mkldnn._is_mkldnn_bf16_supported()


@pytest.mark.parametrize(
    ("capability", "expected"), [((7, 5), "float32"), ((8, 0), "bfloat16"), ((9, 0), "bfloat16")]
)
def test_auto_on_cuda_follows_compute_capability(monkeypatch, capability, expected):
    monkeypatch.setattr(precision, "cuda_capability", lambda device: capability)
    choice = precision.resolve_precision("auto", "cuda:0")
    assert choice.precision == expected and choice.requested == "auto"


def test_int8_only_when_allowed_and_native(flags):
    flags(AVX512_BF16)
    assert precision.resolve_precision("auto", "cpu").precision == "bfloat16"
    assert precision.resolve_precision("auto", "cpu", allow_int8=True).precision == "int8"
    flags(AVX2_ONLY)
    assert precision.resolve_precision("auto", "cpu", allow_int8=True).precision == "float32"
    with pytest.raises(ValueError, match="CPU"):
        precision.resolve_precision("int8", "cuda:0")


@pytest.mark.parametrize("name", ["int4", "fp16", "", "Float32"])
def test_unknown_precision_raises(tiny_tic, name):
    with pytest.raises(ValueError, match="precision"):
        ImageCodec(tiny_tic, precision=name)


def test_emulated_bf16_warns_once_with_measured_cost(flags, caplog):
    flags(AVX2_ONLY)
    with caplog.at_level(logging.WARNING, logger="transtic.precision"):
        with pytest.warns(RuntimeWarning, match=r"matmul measured [0-9.]+x (slower|faster) than"):
            assert precision.resolve_precision("bfloat16", "cpu").precision == "bfloat16"
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            precision.resolve_precision("bfloat16", "cpu")  # second time: silent
    assert sum("emulated" in r.message for r in caplog.records) == 1


@pytest.mark.parametrize(("ratio", "says"), [(31.0, "31.0x slower"), (0.25, "4.0x faster")])
def test_emulated_bf16_warning_says_which_way_the_cost_goes(flags, monkeypatch, ratio, says):
    flags(AVX2_ONLY)
    monkeypatch.setattr(precision, "bf16_slowdown", lambda: ratio)
    monkeypatch.setattr(precision, "_warned", set())
    with pytest.warns(RuntimeWarning, match=f"bf16 matmul measured {says} than in float32"):
        precision.resolve_precision("bfloat16", "cpu")


def test_native_bf16_does_not_warn(flags):
    flags(AVX512_BF16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        precision.resolve_precision("bfloat16", "cpu")


def test_cpu_flags_reads_proc_cpuinfo():
    flags = precision.cpu_flags()
    assert isinstance(flags, frozenset)
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        assert "avx2" in flags


def test_codec_logs_and_reports_its_choice(flags, tiny_tic, caplog):
    flags(AVX2_ONLY)
    with caplog.at_level(logging.INFO, logger="transtic.precision"):
        codec = ImageCodec(tiny_tic)
    assert codec.precision == "float32"
    assert codec.precision_choice.requested == "auto"
    assert any("precision float32" in r.message for r in caplog.records)
    flags(AVX512_BF16)
    assert ImageCodec(tiny_tic).precision == "bfloat16"


@pytest.mark.parametrize("fast", ["bfloat16", "int8"])
def test_fast_paths_keep_streams_decodable_by_float32(tiny_transtic, fast):
    """Entropy parameters stay exact: a float32 decoder parses fast encoders' streams
    and recovers exactly the latent the fast encoder coded."""
    exact = ImageCodec(tiny_transtic, precision="float32")
    quick = ImageCodec(tiny_transtic, precision=fast)
    assert quick.precision == fast
    image = torch.rand(3, 96, 160)
    stream = quick.encode(image).data
    by_exact = exact.decode(stream, keep_latent=True)
    by_quick = quick.decode(stream, keep_latent=True)
    assert by_exact.y_hat is not None and by_quick.y_hat is not None
    assert torch.equal(by_exact.y_hat, by_quick.y_hat)
    assert (by_exact.image - by_quick.image).abs().mean() < 0.05
    assert (exact.decode(exact.encode(image).data).image - by_exact.image).abs().mean() < 0.05


def test_float32_fast_copy_matches_the_reference_model(tiny_transtic):
    """Channels-last, BN-folded float32 transforms compute the model's function."""
    fast = ImageCodec(tiny_transtic, precision="float32")._transforms
    assert fast is not tiny_transtic
    x = torch.rand(1, 3, 256, 256)
    y_ref, z_ref = tiny_transtic.analyze(x)
    y, z = fast.analyze(x.contiguous(memory_format=torch.channels_last))
    assert (y - y_ref).abs().max() <= 1e-4 * y_ref.abs().max()
    assert (z - z_ref).abs().max() <= 1e-4 * z_ref.abs().max()
    y_hat = torch.round(y_ref)
    x_ref = tiny_transtic.synthesize(y_hat)
    assert (fast.synthesize(y_hat) - x_ref).abs().max() <= 1e-4


def test_int8_quantises_the_transforms_only(tiny_transtic, monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    quick = ImageCodec(tiny_transtic, precision="int8")
    names = {type(m).__module__ for m in quick._transforms.g_a1.modules()}
    assert any("quantized" in n for n in names)
    assert not any("quantized" in type(m).__module__ for m in quick._transforms.h_s0.modules())


def test_fast_copy_runs_the_fused_swin_paths_outside_the_hyper_synthesis(tiny_transtic):
    from transtic.layers import SwinStage

    fast = ImageCodec(tiny_transtic, precision="float32")._transforms
    stages = {name: m for name, m in fast.named_modules() if isinstance(m, SwinStage)}
    assert stages
    for name, stage in stages.items():
        assert stage.window_order_stream == (not name.startswith("h_s")), name
    assert not any(
        m.window_order_stream for m in tiny_transtic.modules() if isinstance(m, SwinStage)
    )
