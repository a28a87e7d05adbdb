"""Building blocks of the TIC / TransTIC transforms."""

from torch import nn

from .attention import WindowAttention
from .prompt_generator import InstancePromptGenerator
from .swin import RSTB, SwinBlock, SwinStage, set_fused_inference


def conv(cin: int, cout: int, kernel_size: int = 5, stride: int = 2) -> nn.Conv2d:
    """'same'-padded strided convolution (CompressAI's ``conv``)."""
    return nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=kernel_size // 2)


def deconv(cin: int, cout: int, kernel_size: int = 5, stride: int = 2) -> nn.ConvTranspose2d:
    """Transposed convolution that exactly multiplies the size by ``stride``."""
    return nn.ConvTranspose2d(
        cin,
        cout,
        kernel_size,
        stride=stride,
        output_padding=stride - 1,
        padding=kernel_size // 2,
    )


__all__ = [
    "RSTB",
    "InstancePromptGenerator",
    "SwinBlock",
    "SwinStage",
    "WindowAttention",
    "conv",
    "deconv",
    "set_fused_inference",
]
