"""TIC (Lu et al., DCC 2022) and its prompted transfer TransTIC (Chen et al., ICCV 2023)."""

from __future__ import annotations

from torch import Tensor, nn

from ..layers import InstancePromptGenerator, conv
from .base import CodecConfig, HyperpriorCodec, PromptConfig


class TIC(HyperpriorCodec):
    """The base codec for human viewing: Swin analysis/synthesis with a hyperprior."""

    def __init__(self, config: CodecConfig | None = None) -> None:
        super().__init__()
        self.config = config or CodecConfig()
        c = self.config
        n, m, d, h, w = c.N, c.M, c.depths, c.num_heads, c.window
        # Registration order matches the released checkpoints' key order.
        self.g_a0 = conv(3, n, kernel_size=5, stride=2)
        self.g_a1 = self._stage(n, d[0], h[0], w, 2)
        self.g_a2 = conv(n, n, kernel_size=3, stride=2)
        self.g_a3 = self._stage(n, d[1], h[1], w, 4)
        self.g_a4 = conv(n, n, kernel_size=3, stride=2)
        self.g_a5 = self._stage(n, d[2], h[2], w, 8)
        self.g_a6 = conv(n, m, kernel_size=3, stride=2)
        self.g_a7 = self._stage(m, d[3], h[3], w, 16)
        self._build_hyper()
        self._build_entropy_models()
        self._build_synthesis()
        self._init_weights()
        self.set_attention_impl("sdpa")

    def g_a(self, x: Tensor) -> Tensor:
        x = self.g_a1(self.g_a0(x))
        x = self.g_a3(self.g_a2(x))
        x = self.g_a5(self.g_a4(x))
        return self.g_a7(self.g_a6(x))


class TransTIC(HyperpriorCodec):
    """TIC with instance prompts in the first two encoder stages and task prompts in the decoder.

    Only parameters whose names contain ``prompt`` are trained; the rest is the frozen
    base codec, so a TransTIC checkpoint is a base checkpoint plus prompt tensors.
    """

    def __init__(self, config: CodecConfig | None = None, prompts: PromptConfig | None = None):
        super().__init__()
        self.config = config or CodecConfig()
        self.prompts = prompts or PromptConfig()
        c, p = self.config, self.prompts
        n, m, d, h, w = c.N, c.M, c.depths, c.num_heads, c.window
        down = p.mask_downsample
        self.g_a0 = conv(3, n, kernel_size=5, stride=2)
        self.g_a0_prompt = InstancePromptGenerator(n, p.generator_channels)
        self.g_a0_prompt_layers = nn.ModuleList(
            conv(n, n, kernel_size=3, stride=down) for _ in range(d[0])
        )
        self.g_a1 = self._stage(n, d[0], h[0], w, 2, instance_prompt_downsample=down)
        self.g_a2 = conv(n, n, kernel_size=3, stride=2)
        self.g_a2_prompt = conv(n, n, kernel_size=3, stride=2)
        self.g_a2_prompt_layers = nn.ModuleList(
            conv(n, n, kernel_size=3, stride=down) for _ in range(d[1])
        )
        self.g_a3 = self._stage(n, d[1], h[1], w, 4, instance_prompt_downsample=down)
        self.g_a4 = conv(n, n, kernel_size=3, stride=2)
        self.g_a5 = self._stage(n, d[2], h[2], w, 8)
        self.g_a6 = conv(n, m, kernel_size=3, stride=2)
        self.g_a7 = self._stage(m, d[3], h[3], w, 16)
        self._build_hyper()
        self._build_synthesis(p.num_tokens, p.decoder_blocks)
        self._build_entropy_models()
        self._init_weights()
        self.set_attention_impl("sdpa")

    def g_a(self, x: Tensor) -> Tensor:
        prompt = self.g_a0_prompt(x)
        x = self.g_a0(x)
        x = self.g_a1(x, [layer(prompt) for layer in self.g_a0_prompt_layers])
        x = self.g_a2(x)
        prompt = self.g_a2_prompt(prompt)
        x = self.g_a3(x, [layer(prompt) for layer in self.g_a2_prompt_layers])
        x = self.g_a5(self.g_a4(x))
        return self.g_a7(self.g_a6(x))

    def prompt_parameters(self) -> list[nn.Parameter]:
        """The parameters TransTIC trains; everything else stays frozen."""
        return [p for name, p in self.named_parameters() if "prompt" in name]
