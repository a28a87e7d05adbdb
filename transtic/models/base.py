"""The hyperprior codec contract shared by TIC and TransTIC (CompressAI style)."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from compressai.models.utils import update_registered_buffers
from torch import Tensor, nn

from ..layers import RSTB, conv, deconv
from .entropy import EntropyBottleneck, GaussianConditional, get_scale_table
from .quantization import Float32Island, has_int8_dot_products, quantize_transforms

EntropyMode = Literal["float", "fixed"]


@dataclass(frozen=True)
class CodecConfig:
    """Architecture of the TIC transforms. Defaults are the paper's (qualities 1-4)."""

    N: int = 128
    M: int = 192
    depths: tuple[int, ...] = (2, 4, 6, 2, 2, 2)
    num_heads: tuple[int, ...] = (8, 8, 8, 16, 16, 16)
    window: int = 8
    mlp_ratio: float = 2.0
    # Training-time input size; decides which deep stages skip window shifting.
    reference_resolution: tuple[int, int] = (256, 256)

    @property
    def alignment(self) -> int:
        """H and W of coded images must be multiples of this.

        Every stage needs whole windows; the effective window of each stage is fixed
        by the training resolution (at 256 and window 8 this gives 256).
        """
        from ..layers.swin import block_geometry

        ref = min(self.reference_resolution)
        half = self.window // 2
        stages = [(2, self.window), (4, self.window), (8, self.window), (16, self.window)]
        stages += [(32, half), (64, half)]
        sizes = [scale * block_geometry(ref // scale, win, 0)[0] for scale, win in stages]
        return math.lcm(*sizes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "N": self.N,
            "M": self.M,
            "depths": list(self.depths),
            "num_heads": list(self.num_heads),
            "window": self.window,
            "mlp_ratio": self.mlp_ratio,
            "reference_resolution": list(self.reference_resolution),
        }


@dataclass(frozen=True)
class PromptConfig:
    """TransTIC prompt settings of the official classification/detection configs."""

    num_tokens: int = 16
    mask_downsample: int = 2
    decoder_blocks: tuple[int, ...] = (1, 2, 3, 4)
    generator_channels: int = 32
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


class HyperpriorCodec(nn.Module):
    """Analysis/synthesis transforms with a mean-scale Gaussian hyperprior.

    Subclasses define ``g_a`` and ``g_s``; the hyper transforms, entropy models and
    the CompressAI ``forward``/``compress``/``decompress``/``update`` contract live here.
    """

    config: CodecConfig

    def _stage(self, dim: int, depth: int, heads: int, window: int, scale: int, **kw: Any) -> RSTB:
        ref = self.config.reference_resolution
        return RSTB(
            dim,
            depth,
            heads,
            window,
            (ref[0] // scale, ref[1] // scale),
            self.config.mlp_ratio,
            **kw,
        )

    def _build_hyper(self) -> None:
        c = self.config
        n, m, d, h, half = c.N, c.M, c.depths, c.num_heads, c.window // 2
        rd, rh = d[::-1], h[::-1]
        self.h_a0 = conv(m, n, kernel_size=3, stride=2)
        self.h_a1 = self._stage(n, d[4], h[4], half, 32)
        self.h_a2 = conv(n, n, kernel_size=3, stride=2)
        self.h_a3 = self._stage(n, d[5], h[5], half, 64)
        self.h_s0 = self._stage(n, rd[0], rh[0], half, 64)
        self.h_s1 = deconv(n, n, kernel_size=3, stride=2)
        self.h_s2 = self._stage(n, rd[1], rh[1], half, 32)
        self.h_s3 = deconv(n, m * 2, kernel_size=3, stride=2)

    def _build_entropy_models(self) -> None:
        self.entropy_bottleneck = EntropyBottleneck(self.config.N)
        self.gaussian_conditional = GaussianConditional(None)

    def _build_synthesis(
        self, task_prompts: int = 0, prompted_blocks: tuple[int, ...] = ()
    ) -> None:
        c = self.config
        n, m, w = c.N, c.M, c.window
        rd, rh = c.depths[::-1], c.num_heads[::-1]

        def tokens(block: int) -> int:
            return task_prompts if block in prompted_blocks else 0

        self.g_s0 = self._stage(m, rd[2], rh[2], w, 16, num_task_prompts=tokens(1))
        self.g_s1 = deconv(m, n, kernel_size=3, stride=2)
        self.g_s2 = self._stage(n, rd[3], rh[3], w, 8, num_task_prompts=tokens(2))
        self.g_s3 = deconv(n, n, kernel_size=3, stride=2)
        self.g_s4 = self._stage(n, rd[4], rh[4], w, 4, num_task_prompts=tokens(3))
        self.g_s5 = deconv(n, n, kernel_size=3, stride=2)
        self.g_s6 = self._stage(n, rd[5], rh[5], w, 2, num_task_prompts=tokens(4))
        self.g_s7 = deconv(n, 3, kernel_size=5, stride=2)

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    # -- transforms -------------------------------------------------------------------
    def g_a(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def g_s(self, y_hat: Tensor) -> Tensor:
        x = self.g_s1(self.g_s0(y_hat))
        x = self.g_s3(self.g_s2(x))
        x = self.g_s5(self.g_s4(x))
        return self.g_s7(self.g_s6(x))

    def h_a(self, y: Tensor) -> Tensor:
        return self.h_a3(self.h_a2(self.h_a1(self.h_a0(y))))

    def h_s(self, z_hat: Tensor) -> Tensor:
        return self.h_s3(self.h_s2(self.h_s1(self.h_s0(z_hat))))

    # -- entropy parameters -----------------------------------------------------------
    entropy_mode: EntropyMode = "float"

    def entropy_parameters(
        self, z_hat: Tensor, mode: EntropyMode | None = None
    ) -> tuple[Tensor, Tensor]:
        """Scales and means of the latent's Gaussians from the decoded hyper-latent.

        ``float`` is the paper's computation; ``fixed`` gives bit-identical results on
        any machine (see ``transtic.entropy``), which the decoder needs to parse streams.
        """
        if (mode or self.entropy_mode) == "fixed":
            from ..entropy import FixedPointHyperSynthesis

            fixed = getattr(self, "_fixed_hs", None)
            if fixed is None:
                fixed = FixedPointHyperSynthesis.from_model(self)
                object.__setattr__(self, "_fixed_hs", fixed)
            scales, means = fixed(z_hat)
            return scales.to(z_hat.dtype), means.to(z_hat.dtype)
        scales, means = self.h_s(z_hat).float().chunk(2, 1)
        return scales, means

    def _invalidate_fixed_point(self) -> None:
        if "_fixed_hs" in self.__dict__:
            del self.__dict__["_fixed_hs"]

    # -- CompressAI contract -----------------------------------------------------------
    def forward(self, x: Tensor) -> dict[str, Any]:
        y = self.g_a(x)
        z = self.h_a(y)
        z_hat, z_likelihoods = self.entropy_bottleneck(z)
        scales, means = self.h_s(z_hat).chunk(2, 1)
        y_hat, y_likelihoods = self.gaussian_conditional(y, scales, means=means)
        x_hat = self.g_s(y_hat)
        return {"x_hat": x_hat, "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}}

    @torch.no_grad()
    def analyze(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Encoder transforms only: image -> (latent y, hyper-latent z), in float32."""
        y = self.g_a(x.to(self._dtype_of("g_a0"))).float()
        return y, self.h_a(y.to(self._dtype_of("h_a0"))).float()

    @torch.no_grad()
    def entropy_encode(
        self, y: Tensor, z: Tensor, entropy_mode: EntropyMode | None = None
    ) -> tuple[list[bytes], list[bytes], Tensor]:
        """Range-code z, then y given the entropy parameters -> (y_strings, z_strings, y_hat)."""
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.shape[-2:])
        scales, means = self.entropy_parameters(z_hat, entropy_mode)
        indexes = self.gaussian_conditional.build_indexes(scales)
        y_strings = self.gaussian_conditional.compress(y, indexes, means=means)
        return y_strings, z_strings, torch.round(y - means) + means

    @torch.no_grad()
    def entropy_decode(
        self,
        y_strings: list[bytes],
        z_strings: list[bytes],
        z_shape: tuple[int, int] | torch.Size,
        entropy_mode: EntropyMode | None = None,
    ) -> Tensor:
        """Decode the quantized latent y_hat from its strings."""
        z_hat = self.entropy_bottleneck.decompress(z_strings, tuple(z_shape))
        scales, means = self.entropy_parameters(z_hat, entropy_mode)
        indexes = self.gaussian_conditional.build_indexes(scales)
        return self.gaussian_conditional.decompress(y_strings, indexes, means=means)

    @torch.no_grad()
    def synthesize(self, y_hat: Tensor) -> Tensor:
        """Decoder transform: y_hat -> image in [0, 1] (float32)."""
        return self.g_s(y_hat.to(self._dtype_of("g_s7"))).float().clamp_(0, 1)

    def _dtype_of(self, module: str) -> torch.dtype:
        weights = next(getattr(self, module).parameters(), None)
        return torch.float32 if weights is None else weights.dtype

    def fast_transforms(self, precision: str = "bfloat16") -> HyperpriorCodec:
        """A copy whose analysis/synthesis transforms run fast: channels-last, BN folded.

        The Swin stages keep their residual stream in window order and fuse GELU into
        fc1 (``set_fused_inference``).
        ``float32``: same weights (results equal up to float rounding, ~1e-6 relative).
        ``bfloat16``: the transforms' weights in bf16 (the prompt generator stays float32
        with Winograd convs where bf16 runs on AVX-512 BF16 dot products, which that beats).
        ``int8``: the instance-prompt branch (generator and its convs) statically
        quantised (calibrated on fixed synthetic photos; without int8 dot products the
        generator stays float32 with Winograd convs); the rest in bf16 where the CPU has
        native bf16, else every Linear dynamically quantised and the rest float32
        (``transtic.models.quantization``).
        Only ``analyze`` and ``synthesize`` of the copy are meant to be used: the
        hyper-synthesis and entropy models, which decide the bitstream's meaning, keep
        their float32 weights, so streams stay decodable by a float32 decoder.
        """
        if precision not in ("float32", "bfloat16", "int8"):
            raise ValueError(f"no fast transforms for precision {precision!r}")
        from ..kernels.winograd import available as winograd_available
        from ..layers import InstancePromptGenerator, set_fused_inference
        from ..layers.subpixel import rewrite_narrow_deconvs

        fast = copy.deepcopy(self).eval()
        rewrite_narrow_deconvs(fast)  # the synthesis' last layer (3 outputs), every precision
        for name, module in fast.named_children():
            if name.startswith(("g_a", "g_s", "h_a")):
                # int8: the quantiser fuses conv + BN + ReLU itself
                if isinstance(module, InstancePromptGenerator) and precision != "int8":
                    module.fold_batch_norms()
                    winograd = _on_cpu(module) and winograd_available()
                    if winograd and precision == "float32":
                        module.use_winograd_convs()
                    elif winograd and precision == "bfloat16" and _float32_generator_in_bf16():
                        module.use_winograd_convs()
                        module = Float32Island(module)
                        setattr(fast, name, module)
                set_fused_inference(module, True)
                if precision == "bfloat16" and not isinstance(module, Float32Island):
                    module.to(dtype=torch.bfloat16)
                # oneDNN convs run fastest on NHWC, and the Swin stages read NHWC tokens
                module.to(memory_format=torch.channels_last)
        from ..kernels import available as native_kernels

        # the native window-attention kernel where it can be built (a C++ compiler);
        # blocks fall back to SDPA per call for anything it does not run (bf16, autograd)
        fast.set_attention_impl("native" if native_kernels() else "sdpa")
        if precision == "int8":
            from ..precision import native_bf16

            # without int8 dot products the float32 Winograd generator is the faster one
            # (676 against ~780 ms/MP for the int8 one under an AVX2 cap)
            quantize_transforms(
                fast,
                rest_in_bf16=native_bf16(torch.device("cpu")),
                float32_generator=winograd_available() and not has_int8_dot_products(),
            )
        return fast

    def compress(self, x: Tensor, *, entropy_mode: EntropyMode | None = None) -> dict[str, Any]:
        y, z = self.analyze(x)
        y_strings, z_strings, y_hat = self.entropy_encode(y, z, entropy_mode)
        return {"strings": [y_strings, z_strings], "shape": tuple(z.shape[-2:]), "y_hat": y_hat}

    def decompress(
        self,
        strings: list[list[bytes]],
        shape: tuple[int, int] | torch.Size,
        *,
        entropy_mode: EntropyMode | None = None,
    ) -> dict[str, Tensor]:
        if not (isinstance(strings, list | tuple) and len(strings) == 2):
            raise ValueError("expected strings = [y_strings, z_strings]")
        y_hat = self.entropy_decode(strings[0], strings[1], shape, entropy_mode)
        return {"x_hat": self.synthesize(y_hat), "y_hat": y_hat}

    def update(self, scale_table: Tensor | None = None, force: bool = False) -> bool:
        """Tabulate CDFs for the range coder; call once after training or loading."""
        if scale_table is None:
            scale_table = get_scale_table()
        updated = bool(self.gaussian_conditional.update_scale_table(scale_table, force=force))
        updated |= bool(self.entropy_bottleneck.update(force=force))
        self._invalidate_fixed_point()
        return updated

    def aux_loss(self) -> Tensor:
        return sum(
            (m.loss() for m in self.modules() if isinstance(m, EntropyBottleneck)),
            torch.zeros(()),
        )

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        # CDF tables change size with the weights; resize the buffers before copying.
        for module, names in (
            ("entropy_bottleneck", ["_quantized_cdf", "_offset", "_cdf_length"]),
            ("gaussian_conditional", ["_quantized_cdf", "_offset", "_cdf_length", "scale_table"]),
        ):
            present = [n for n in names if f"{module}.{n}" in state_dict]
            update_registered_buffers(
                getattr(self, module), module, present, state_dict, policy="resize"
            )
        self._invalidate_fixed_point()
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def set_attention_impl(self, impl: str) -> None:
        """``"sdpa"`` (fused, default), ``"eager"`` (the reference's explicit softmax) or
        ``"native"`` (the compiled CPU kernel, float32 inference; SDPA elsewhere)."""
        from ..layers import WindowAttention
        from ..layers.attention import ATTENTION_IMPLS

        if impl not in ATTENTION_IMPLS:
            raise ValueError(f"unknown attention implementation {impl!r}")
        for name, module in self.named_modules():
            # The float entropy-parameter path must compute exactly what the paper's
            # code computes, or streams from it decode to garbage: h_s stays eager.
            if isinstance(module, WindowAttention) and not name.startswith("h_s"):
                module.impl = impl  # type: ignore[assignment]


def _float32_generator_in_bf16() -> bool:
    """Where bf16 convs run on AVX-512 BF16 dot products (about twice the float32 rate,
    no AMX tiles), the prompt generator in float32 with F(4x4, 3x3) Winograd convs (four
    times fewer products) is the faster one: 617 against 732 ms/MP on a Zen 4 EPYC."""
    from ..precision import usable_cpu_flags

    flags = usable_cpu_flags()
    return "avx512_bf16" in flags and "amx_bf16" not in flags


def _on_cpu(module: nn.Module) -> bool:
    first = next(module.parameters(), None)
    return first is None or first.device.type == "cpu"
