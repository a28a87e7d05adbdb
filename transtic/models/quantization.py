"""The int8 fast path: torch.ao quantisation of the private fast copy's transforms.

- The instance prompt generator (a full-resolution U-Net, the costliest part of the
  encoder) runs end to end in int8 where the CPU has int8 dot products (VNNI): FX
  graph-mode static quantisation fuses each conv + BatchNorm + ReLU into one x86 /
  oneDNN int8 kernel, and max-pooling, bilinear upsampling and the skip
  concatenations stay on int8 tensors. Without them (7-bit activations, saturating
  16-bit sums) the float32 generator with Winograd convs is faster, and it stays so.
- The prompt branch's strided convolutions (from the generator's output to the
  instance prompts of each stage) are statically quantised one by one: int8 in, int8
  kernel, float32 out. The image path's convolutions stay float32 (``_prompt_branch_convs``
  says why).
- The rest: where the CPU has native bf16, it runs in bf16 (its GEMMs beat dynamically
  quantised int8 ones there); elsewhere every ``nn.Linear`` of the analysis, synthesis
  and hyper-analysis transforms is dynamically quantised (int8 weights, per-call
  activation ranges) and the rest stays float32.

Transposed convolutions (the synthesis transform's upsampling) stay float32: torch's
int8 transposed-conv kernels ran slower than oneDNN's float32 ones here (oneDNN's int8
path rejects their output padding). The hyper-synthesis and entropy models are never
touched: they decide what a stream means.

Static quantisation needs activation ranges. They are calibrated once, when the copy is
made, on :func:`calibration_images` — synthetic scenes generated from a fixed seed, so
the int8 copy of given weights is the same on every run and nothing is read or
downloaded. torch's default observers are used (histogram for activations, per-channel
min/max for weights). Activations use the full 8-bit range where the CPU has int8 dot
product instructions (VNNI) and 7 bits elsewhere, where fbgemm/oneDNN multiply pairs
of bytes into a saturating 16-bit sum.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from .base import HyperpriorCodec

CALIBRATION_SEED = 20231001
CALIBRATION_SIDE = 256
CALIBRATION_COUNT = 2


@contextlib.contextmanager
def _quiet_torch_ao() -> Iterator[None]:
    # torch.ao's eager/FX quantisation is deprecated in favour of torchao, which this
    # project does not depend on; the int8 kernels it dispatches to are maintained.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        yield


def quantize_linear_layers(module: nn.Module) -> nn.Module:
    """Dynamic int8 quantisation of every nn.Linear (x86/fbgemm or oneDNN kernels)."""
    from torch.ao.quantization import quantize_dynamic

    with _quiet_torch_ao():
        return quantize_dynamic(module, {nn.Linear}, dtype=torch.qint8)


def has_int8_dot_products() -> bool:
    """VNNI-class instructions that the kernel libraries of this process may use."""
    from .. import precision

    # usable flags: an AVX2-capped oneDNN/FBGEMM on a VNNI chip saturates like AVX2
    return precision.native_int8(torch.device("cpu"))


def qconfig_mapping() -> Any:
    """torch's default static-quantisation settings, full 8-bit activations with VNNI."""
    from torch.ao.quantization import get_default_qconfig_mapping

    # "onednn" differs from "x86" only in not reducing activations to 7 bits, which
    # is safe exactly where int8 products accumulate in 32 bits (VNNI).
    return get_default_qconfig_mapping("onednn" if has_int8_dot_products() else "x86")


def calibration_images(
    side: int = CALIBRATION_SIDE, count: int = CALIBRATION_COUNT, seed: int = CALIBRATION_SEED
) -> Tensor:
    """``count`` synthetic photos (count, 3, side, side) in [0, 1], the same on every call.

    Each has what activation ranges depend on in real photos: a smooth colour gradient
    (illumination), flat-coloured ellipses and boxes with hard edges (objects), texture
    at several scales (1/f-like noise), fine stripes and sensor noise, on 8-bit levels.
    """
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=gen)

    axis = torch.linspace(0.0, 1.0, side)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    images = []
    for _ in range(count):
        angle = float(rand(1)) * 2 * math.pi
        ramp = (xx * math.cos(angle) + yy * math.sin(angle)).sub(-1).div(2)
        start, end = 0.5 * rand(3, 1, 1) + 0.5 * rand(1), 0.5 * rand(3, 1, 1) + 0.5 * rand(1)
        image = start * (1 - ramp) + end * ramp
        for shape in range(16):
            cx, cy, rx, ry = rand(4).tolist()
            rx, ry = 0.03 + 0.3 * rx, 0.03 + 0.3 * ry
            if shape % 2:
                inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1
            else:
                inside = ((xx - cx).abs() < rx) & ((yy - cy).abs() < ry)
            shading = 0.75 + 0.25 * (yy - cy) / ry
            colour = 0.5 * rand(3, 1, 1) + 0.5 * rand(1, 1, 1)  # photos are rarely saturated
            image = torch.where(inside, colour * shading.clamp(0, 1.2), image)
        for cells in (4, 16, 64):
            # texture mostly in brightness, a little in colour
            coarse = torch.randn(1, 1, cells, cells, generator=gen)
            coarse = coarse + 0.3 * torch.randn(1, 3, cells, cells, generator=gen)
            fine = F.interpolate(coarse, size=(side, side), mode="bicubic", align_corners=False)
            image = image + 0.25 / math.sqrt(cells) * fine[0]
        frequency, phase = 20 + 60 * float(rand(1)), float(rand(1)) * math.pi
        stripes = torch.sin(frequency * math.pi * (xx + 0.3 * yy) + phase)
        image = image + 0.05 * stripes * (xx > 0.5)
        image = image + 0.02 * torch.randn(3, side, side, generator=gen)
        images.append(image.clamp(0, 1).mul(255).round().div(255))
    return torch.stack(images)


class _Interpolate(nn.Module):
    """``nn.Upsample`` as a traced ``F.interpolate``, which the FX quantiser keeps in int8
    (it leaves ``nn.Upsample`` modules in float32, at a dequantise + quantise each)."""

    def __init__(self, upsample: nn.Upsample) -> None:
        super().__init__()
        self.scale_factor = upsample.scale_factor
        self.mode = upsample.mode
        self.align_corners = upsample.align_corners

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(
            x, scale_factor=self.scale_factor, mode=self.mode, align_corners=self.align_corners
        )


def _observe_graph(module: nn.Module, example: Tensor) -> nn.Module:
    """FX-traced copy of ``module`` with observers (convert with ``convert_fx``)."""
    from torch.ao.quantization.quantize_fx import prepare_fx

    for parent in list(module.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.Upsample):
                setattr(parent, name, _Interpolate(child))
    with _quiet_torch_ao():
        return prepare_fx(module, qconfig_mapping(), example_inputs=(example,))


def concatenate_without_clipping(tensors: list[Tensor], dim: int = 0, levels: int = 255) -> Tensor:
    """``torch.cat`` of int8 tensors on a grid that holds every input's whole range.

    ``torch.cat`` keeps the first input's scale and clips the others to it (the FX
    quantiser gives the U-Net's skip and upsampled inputs their own ranges); the
    union of the inputs' ranges is exactly the output's range, so no calibration needed.
    """
    low = min(t.q_scale() * -t.q_zero_point() for t in tensors)
    high = max(t.q_scale() * (levels - t.q_zero_point()) for t in tensors)
    scale = (high - low) / levels
    return torch.ops.quantized.cat(tensors, dim, scale, round(-low / scale))


def _rewrite_concatenations(graph: Any) -> Any:
    # the output must stay on the activations' grid (7 bits without VNNI)
    levels = qconfig_mapping().global_qconfig.activation().quant_max
    for node in graph.graph.nodes:
        if node.op == "call_function" and node.target is torch.cat:
            node.target = concatenate_without_clipping
            node.kwargs = {**node.kwargs, "levels": levels}
    graph.recompile()
    return graph


def _observe_conv(conv: nn.Conv2d) -> nn.Module:
    """Quantise-in / int8 conv / dequantise-out wrapper with observers (eager mode)."""
    from torch.ao.quantization import QuantWrapper, prepare

    wrapper = QuantWrapper(conv)
    wrapper.qconfig = qconfig_mapping().global_qconfig
    with _quiet_torch_ao():
        return prepare(wrapper)


def _convert(observed: nn.Module) -> nn.Module:
    from torch.ao.quantization import QuantWrapper, convert
    from torch.ao.quantization.quantize_fx import convert_fx

    with _quiet_torch_ao():
        if isinstance(observed, QuantWrapper):
            return convert(observed)
        return _rewrite_concatenations(convert_fx(observed))  # type: ignore[arg-type]


def _prompt_branch_convs(fast: HyperpriorCodec) -> Iterator[tuple[nn.Module, str, nn.Conv2d]]:
    """(parent, attribute, conv) for the prompt branch's convs (fed by the prompts).

    The analysis convs of the image path stay float32. Those between Swin stages
    (``g_a2``, ``g_a4``, ``g_a6``) see a few outlier channels that a per-tensor int8
    grid resolves badly: on the paper-size reference weights they tripled the latent's
    error (1.5 % -> 3.4 % relative) for ~2 % of the encode time. ``g_a0`` (3 input
    channels, ~1 % of the time) added 0.2 points of error for a gain within noise.
    """
    for name, child in fast.named_children():
        if not (name.startswith("g_a") and "_prompt" in name):
            continue
        if isinstance(child, nn.Conv2d):
            yield fast, name, child
        elif isinstance(child, nn.ModuleList):
            for index, layer in enumerate(child):
                if isinstance(layer, nn.Conv2d):
                    yield child, str(index), layer


class Float32Island(nn.Module):
    """A float32 module inside bf16 transforms (an int8 module, whose quantiser takes
    float32, or the float32 Winograd prompt generator): float32 in, the caller's dtype
    out."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x.float()).to(x.dtype)


def quantize_transforms(
    fast: HyperpriorCodec, *, rest_in_bf16: bool = False, float32_generator: bool = False
) -> None:
    """Turn a float32 fast copy (eval mode, BNs not yet folded) into the int8 copy, in place.

    ``rest_in_bf16`` (CPUs with native bf16): what is not statically quantised runs in
    bf16, whose GEMMs beat dynamically quantised int8 ones there; otherwise the Linear
    layers are dynamically quantised and the rest stays float32.
    ``float32_generator``: the prompt generator stays float32 with its BNs folded and
    Winograd convs (``use_winograd_convs``); without int8 dot products (7-bit
    activations, saturating 16-bit sums) it is both faster and exact.
    """
    from ..layers import InstancePromptGenerator

    side = max(1, round(CALIBRATION_SIDE / fast.config.alignment)) * fast.config.alignment
    images = calibration_images(side).contiguous(memory_format=torch.channels_last)
    observed: list[tuple[nn.Module, str, nn.Module]] = []
    for name, child in fast.named_children():
        if not (name.startswith("g_a") and isinstance(child, InstancePromptGenerator)):
            continue
        if float32_generator:
            child.fold_batch_norms()
            child.use_winograd_convs()
            setattr(fast, name, Float32Island(child) if rest_in_bf16 else child)
        else:
            observed.append((fast, name, _observe_graph(child, images[:1])))
    for parent, attr, conv in _prompt_branch_convs(fast):
        observed.append((parent, attr, _observe_conv(conv)))
    for parent, attr, module in observed:
        setattr(parent, attr, module)
    if observed:  # TIC has no prompt branch: nothing to calibrate
        with torch.no_grad():
            fast.analyze(images)
    for parent, attr, module in observed:
        converted = _convert(module).to(memory_format=torch.channels_last)
        setattr(parent, attr, Float32Island(converted) if rest_in_bf16 else converted)
    for name, child in fast.named_children():
        if not name.startswith(("g_a", "g_s", "h_a")):
            continue
        if not rest_in_bf16:
            setattr(fast, name, quantize_linear_layers(child))
            continue
        members = child if isinstance(child, nn.ModuleList) else [child]
        for member in members:
            if not isinstance(member, Float32Island):
                member.to(dtype=torch.bfloat16)
